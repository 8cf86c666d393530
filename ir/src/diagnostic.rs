//! Diagnostics: an error with a location and context, rendered as
//! `file:line:col: error: message` followed by the offending line and a caret.

use crate::module::Loc;
use std::fmt::Write;

/// One error found in a module.
#[derive(Clone, Debug, PartialEq)]
pub struct Diagnostic {
    /// Where, if the IR came from text.
    pub loc: Option<Loc>,
    /// What is wrong, as a sentence a user can act on.
    pub message: String,
    /// The offending op or line as printed IR, shown when there is no source text to quote.
    pub context: Option<String>,
}

impl Diagnostic {
    /// A diagnostic at `loc`.
    pub fn new(loc: Option<Loc>, message: impl Into<String>) -> Self {
        Diagnostic {
            loc,
            message: message.into(),
            context: None,
        }
    }

    /// Adds printed IR as context.
    pub fn with_context(mut self, context: impl Into<String>) -> Self {
        self.context = Some(context.into());
        self
    }

    /// Renders the diagnostic. With `source`, the offending line is quoted with a caret under the column.
    pub fn render(&self, file: &str, source: Option<&str>) -> String {
        let mut out = String::new();
        match self.loc {
            Some(loc) => {
                let _ = writeln!(
                    out,
                    "{file}:{}:{}: error: {}",
                    loc.line, loc.col, self.message
                );
                let line = source.and_then(|s| s.lines().nth(loc.line.saturating_sub(1) as usize));
                if let Some(line) = line {
                    let _ = writeln!(out, "    {line}");
                    let pad: String = line
                        .chars()
                        .take(loc.col.saturating_sub(1) as usize)
                        .map(|c| if c == '\t' { '\t' } else { ' ' })
                        .collect();
                    let _ = writeln!(out, "    {pad}^");
                } else if let Some(ctx) = &self.context {
                    let _ = writeln!(out, "    {ctx}");
                }
            }
            None => {
                let _ = writeln!(out, "{file}: error: {}", self.message);
                if let Some(ctx) = &self.context {
                    let _ = writeln!(out, "    {ctx}");
                }
            }
        }
        out
    }
}

/// Renders every diagnostic, in order.
pub fn render_all(diags: &[Diagnostic], file: &str, source: Option<&str>) -> String {
    diags.iter().map(|d| d.render(file, source)).collect()
}
