"""advisor: a PostgreSQL query optimization advisor."""

__version__ = "0.1.0"
