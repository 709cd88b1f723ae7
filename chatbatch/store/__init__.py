"""PostgreSQL/SQLite: the engine, the tables, migrations and every statement the engine
runs against them."""
