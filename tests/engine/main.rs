//! Integration tests of the engine and the CLI, one binary (link time is the scarce resource).

mod cli;
mod export;
mod golden;
mod gpu;
mod intake;
mod parallel;
mod session;
mod session_files;
mod tile_gemm;
mod training;
