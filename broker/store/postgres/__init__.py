"""The store several brokers share: PostgreSQL, through psycopg 3 and its connection pool."""
