//! The writer library: command-line interface and the commands behind it.

pub mod cli;
pub mod commands;
