//! The project: what makes a directory a wanx project and what wanx keeps at its root. [`manifest`]
//! finds and reads `wanx.toml` (walking up like cargo); [`lock`] is `wanx.lock`, the committed record
//! of each task's key and images that `--locked` checks; [`one_writer`] makes sure only one command at
//! a time writes outputs, the lock or the store; [`state_dir`] creates `.wanx/` so that it ignores
//! itself; [`byte_size`] reads and prints the sizes a user gives the cache (`max_size`). Nothing here
//! talks to the network or decides what to build.

pub mod binary_file;
pub mod byte_size;
pub mod cache_digest;
pub mod lock;
pub mod manifest;
pub mod one_writer;
pub mod state_dir;
