//! The connection: opening (and creating) `.wanx/wanx.db`, bringing its schema up to date, and the
//! two ways every query runs: a read, or one write transaction begun `IMMEDIATE` so concurrent
//! `wanx` processes queue on the busy timeout instead of failing on a lock upgrade.

use std::path::{Path, PathBuf};

use rusqlite::{Connection, Transaction, TransactionBehavior};

use crate::error::{Error, Result};
use crate::store::schema::{MIGRATIONS, configure, migrate};

/// The database's file name inside the state directory (`.wanx`).
pub const DB_FILE: &str = "wanx.db";

/// The build database; see the module documentation.
pub struct Store {
    pub(super) conn: Connection,
    path: PathBuf,
}

impl Store {
    /// Opens (creating if needed) `state_dir/wanx.db` and brings its schema up to date.
    pub fn open(state_dir: &Path) -> Result<Store> {
        crate::project::state_dir::create(state_dir)
            .map_err(|e| Error::io("could not create", state_dir, e))?;
        let path = state_dir.join(DB_FILE);
        let conn = Connection::open(&path).map_err(|source| Error::Store {
            path: path.clone(),
            source,
        })?;
        Store::init(conn, path)
    }

    #[cfg(test)]
    /// A private database in memory, for tests and `--dry-run`s.
    pub fn open_in_memory() -> Result<Store> {
        let path = PathBuf::from(":memory:");
        let conn = Connection::open_in_memory().map_err(|source| Error::Store {
            path: path.clone(),
            source,
        })?;
        Store::init(conn, path)
    }

    fn init(mut conn: Connection, path: PathBuf) -> Result<Store> {
        let configured = configure(&conn);
        let version = configured.and_then(|()| migrate(&mut conn));
        match version {
            Ok(Ok(())) => Ok(Store { conn, path }),
            Ok(Err(found)) => Err(Error::Usage {
                message: format!(
                    "the build database `{}` has schema version {found}, newer than this wanx knows ({})",
                    path.display(),
                    MIGRATIONS.len()
                ),
                hint: Some(
                    "upgrade wanx, or move `.wanx/` away to start a fresh cache (the lock and your images are kept)"
                        .to_owned(),
                ),
            }),
            Err(source) => Err(Error::Store { path, source }),
        }
    }

    pub(super) fn read<T>(&self, f: impl FnOnce(&Connection) -> rusqlite::Result<T>) -> Result<T> {
        f(&self.conn).map_err(|source| Error::Store {
            path: self.path.clone(),
            source,
        })
    }

    /// Runs `f` in one write transaction, committed if `f` succeeds.
    pub(super) fn write<T>(
        &mut self,
        f: impl FnOnce(&Transaction<'_>) -> rusqlite::Result<T>,
    ) -> Result<T> {
        let run = |conn: &mut Connection| {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let value = f(&tx)?;
            tx.commit()?;
            Ok(value)
        };
        run(&mut self.conn).map_err(|source| Error::Store {
            path: self.path.clone(),
            source,
        })
    }
}

/// A column holding JSON text (or NULL, read as `T`'s default), parsed; a parse failure is
/// rusqlite's conversion error for that column.
pub(super) fn json_column<T: serde::de::DeserializeOwned + Default>(
    row: &rusqlite::Row<'_>,
    index: usize,
) -> rusqlite::Result<T> {
    match row.get_ref(index)?.as_str_or_null()? {
        Some(text) => serde_json::from_str(text).map_err(|e| {
            rusqlite::Error::FromSqlConversionFailure(
                index,
                rusqlite::types::Type::Text,
                Box::new(e),
            )
        }),
        None => Ok(T::default()),
    }
}
