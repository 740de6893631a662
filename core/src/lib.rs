pub mod io;
pub mod op;
pub mod types;
pub use io::*;
pub use op::*;
pub use types::*;
