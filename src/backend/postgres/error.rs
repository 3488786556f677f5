//! [`ServiceError`]: why a session could not be had or used.

/// Why the service could not be used.
#[derive(Debug)]
pub(crate) enum ServiceError {
    Database(tokio_postgres::Error),
    Refused(String),
    Gone,
}

impl std::fmt::Display for ServiceError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ServiceError::Database(e) => match e.as_db_error() {
                Some(db) => write!(f, "PostgreSQL: {}: {}", db.code().code(), db.message()),
                None => write!(f, "PostgreSQL: {e}"),
            },
            ServiceError::Refused(why) => f.write_str(why),
            ServiceError::Gone => f.write_str("the PostgreSQL backend's runtime is gone"),
        }
    }
}

impl From<tokio_postgres::Error> for ServiceError {
    fn from(e: tokio_postgres::Error) -> Self {
        ServiceError::Database(e)
    }
}
