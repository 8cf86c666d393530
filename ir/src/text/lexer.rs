//! Tokens of the text form (logos), with 1-based line/column positions.

use crate::module::Loc;
use logos::Logos;

/// One token.
#[derive(Logos, Clone, Debug, PartialEq)]
#[logos(skip r"[ \t\r\n\f]+")]
#[logos(skip r";[^\n]*")]
pub enum Tok {
    /// `%name`: a value.
    #[regex(r"%[A-Za-z0-9_.]+", |l| l.slice()[1..].to_string())]
    Value(String),
    /// `@name`: a function.
    #[regex(r"@[A-Za-z0-9_.]+", |l| l.slice()[1..].to_string())]
    Func(String),
    /// `^name`: a block label.
    #[regex(r"\^[A-Za-z0-9_.]+", |l| l.slice()[1..].to_string())]
    Label(String),
    /// `tensor<...>`: the text between the angle brackets.
    #[regex(r"tensor<[A-Za-z0-9_ ]*>", |l| { let s = l.slice(); s[7..s.len() - 1].to_string() })]
    Type(String),
    /// Keywords, op names, element types, symbols, `true`, `false`, `inf`, `nan`.
    #[regex(r"[A-Za-z_][A-Za-z0-9_.]*", |l| l.slice().to_string())]
    Ident(String),
    /// An integer literal, as written.
    #[regex(r"-?[0-9]+", |l| l.slice().to_string())]
    Int(String),
    /// A float literal, as written.
    #[regex(r"-?[0-9]+\.[0-9]*([eE][+-]?[0-9]+)?|-?[0-9]+[eE][+-]?[0-9]+", |l| l.slice().to_string())]
    Float(String),
    /// A string literal, as written (with quotes and escapes).
    #[regex(r#""([^"\\\n]|\\.)*""#, |l| l.slice().to_string())]
    Str(String),
    /// `(`
    #[token("(")]
    LParen,
    /// `)`
    #[token(")")]
    RParen,
    /// `{`
    #[token("{")]
    LBrace,
    /// `}`
    #[token("}")]
    RBrace,
    /// `[`
    #[token("[")]
    LBracket,
    /// `]`
    #[token("]")]
    RBracket,
    /// `,`
    #[token(",")]
    Comma,
    /// `:`
    #[token(":")]
    Colon,
    /// `=`
    #[token("=")]
    Eq,
    /// `->`
    #[token("->")]
    Arrow,
    /// `<=`
    #[token("<=")]
    Le,
    /// `-`
    #[token("-")]
    Minus,
}

impl Tok {
    /// How the token is described in "expected X, found Y" messages.
    pub fn describe(&self) -> String {
        match self {
            Tok::Value(v) => format!("value `%{v}`"),
            Tok::Func(v) => format!("function name `@{v}`"),
            Tok::Label(v) => format!("block label `^{v}`"),
            Tok::Type(v) => format!("type `tensor<{v}>`"),
            Tok::Ident(v) => format!("`{v}`"),
            Tok::Int(v) | Tok::Float(v) => format!("number `{v}`"),
            Tok::Str(v) => format!("string {v}"),
            Tok::LParen => "`(`".into(),
            Tok::RParen => "`)`".into(),
            Tok::LBrace => "`{`".into(),
            Tok::RBrace => "`}`".into(),
            Tok::LBracket => "`[`".into(),
            Tok::RBracket => "`]`".into(),
            Tok::Comma => "`,`".into(),
            Tok::Colon => "`:`".into(),
            Tok::Eq => "`=`".into(),
            Tok::Arrow => "`->`".into(),
            Tok::Le => "`<=`".into(),
            Tok::Minus => "`-`".into(),
        }
    }
}

/// Maps byte offsets to line/column.
pub struct LineIndex {
    starts: Vec<usize>,
}

impl LineIndex {
    /// Indexes `src`.
    pub fn new(src: &str) -> Self {
        let mut starts = vec![0];
        starts.extend(src.match_indices('\n').map(|(i, _)| i + 1));
        LineIndex { starts }
    }

    /// The location of byte `offset` in `src`.
    pub fn loc(&self, src: &str, offset: usize) -> Loc {
        let line = self.starts.partition_point(|&s| s <= offset).max(1);
        let start = self.starts[line - 1];
        let col = src
            .get(start..offset)
            .map_or(offset - start, |s| s.chars().count())
            + 1;
        Loc {
            line: line as u32,
            col: col as u32,
        }
    }
}

/// Lexes `src` into tokens with locations; the error names the first character no token matches.
pub fn lex(src: &str) -> Result<Vec<(Tok, Loc)>, (Loc, String)> {
    let index = LineIndex::new(src);
    let mut out = Vec::new();
    let mut lexer = Tok::lexer(src);
    while let Some(tok) = lexer.next() {
        let loc = index.loc(src, lexer.span().start);
        match tok {
            Ok(t) => out.push((t, loc)),
            Err(()) => {
                let text = lexer.slice();
                let msg = if text.starts_with('"') {
                    "unterminated string literal".to_string()
                } else if text.starts_with("tensor<") {
                    "unterminated tensor type (missing `>`)".to_string()
                } else {
                    format!(
                        "unexpected character `{}`",
                        text.chars().next().unwrap_or('?')
                    )
                };
                return Err((loc, msg));
            }
        }
    }
    Ok(out)
}
