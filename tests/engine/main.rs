//! Integration tests of the engine and the CLI, one binary (link time is the scarce resource).

mod cli;
mod gpu;
mod golden;
mod training;
