//! The text form of the IR: lexer, parser and printer. The grammar is in `docs/ir.md`.
//!
//! Guarantees: printing is deterministic, and `print(parse(print(m))) == print(m)`.

pub mod lexer;
pub mod parser;
pub mod printer;

pub use parser::parse;
pub use printer::{print_function, print_module, print_op};
