//! Streaming decode: ids to text one at a time, holding back incomplete UTF-8 (see the module
//! documentation of `tokenizer`).

use super::{Tokenizer, TokenizerError};

/// Turns ids into text one id at a time, returning only text that is final; see the module
/// documentation. Made by [`Tokenizer::decode_stream`].
#[derive(Debug)]
pub struct DecodeStream<'a> {
    tok: &'a Tokenizer,
    skip_special: bool,
    /// The ids of the last returned piece (context for the decoder), then the ids not yet returned.
    ids: Vec<u32>,
    /// The text the context ids decode to on their own.
    prefix: String,
    /// How many of `ids` are context.
    prefix_ids: usize,
}

impl<'a> DecodeStream<'a> {
    /// A stream over `tok`'s decoder.
    pub(super) fn new(tok: &'a Tokenizer, skip_special: bool) -> DecodeStream<'a> {
        DecodeStream {
            tok,
            skip_special,
            ids: Vec::new(),
            prefix: String::new(),
            prefix_ids: 0,
        }
    }

    /// Takes the next id and returns the text that became final with it, possibly empty.
    pub fn step(&mut self, id: u32) -> Result<String, TokenizerError> {
        self.tok.check_id(id)?;
        self.ids.push(id);
        let text = self.tok.decode_checked(&self.ids, self.skip_special)?;
        if text.len() <= self.prefix.len() || text.ends_with('\u{FFFD}') {
            return Ok(String::new());
        }
        let piece = self.new_text(&text)?;
        self.ids.drain(..self.prefix_ids);
        self.prefix = self.tok.decode_checked(&self.ids, self.skip_special)?;
        self.prefix_ids = self.ids.len();
        Ok(piece)
    }

    /// Ends the stream: the text held back, decoded lossily (U+FFFD for incomplete bytes).
    pub fn finish(self) -> Result<String, TokenizerError> {
        if self.ids.len() == self.prefix_ids {
            return Ok(String::new());
        }
        let text = self.tok.decode_checked(&self.ids, self.skip_special)?;
        self.new_text(&text)
    }

    /// `text` less the context's text. Where `text` does not start with it (the byte-fallback
    /// decoder turned returned text into U+FFFD, see the module documentation), the ids after the
    /// context decoded on their own.
    fn new_text(&self, text: &str) -> Result<String, TokenizerError> {
        match text.strip_prefix(self.prefix.as_str()) {
            Some(rest) => Ok(rest.to_string()),
            None => self
                .tok
                .decode_checked(&self.ids[self.prefix_ids..], self.skip_special),
        }
    }
}
