//! One module per writer command.

pub mod extract;
