"""The store actor and its Postgres adapter: the only package that imports asyncpg."""
