//! Game Master PostgreSQL adapter: the runtime record store and the embedded migrations.
