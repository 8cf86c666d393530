//! Chat prompts: a conversation ([`Message`]s) rendered with the model's own chat template, as
//! transformers' `apply_chat_template` renders it, then encoded with the model's tokenizer.
//!
//! * [`ChatTemplate`] (`template.rs`) is a template and where it came from: `chat_template` in a
//!   Hugging Face folder's `tokenizer_config.json` (or its `chat_template.jinja`), a GGUF file's
//!   `tokenizer.chat_template`, or an artifact's `chat_template` section.
//! * `render.rs` runs it with minijinja in Hugging Face's dialect (`hf_dialect.rs`: `raise_exception`,
//!   `tojson`, `strftime_now`, Python's string methods, loop controls, blocks trimmed).
//! * The BitNet b1.58 2B-4T format (`builtin.rs`) is used only when the model has no template.
//! * [`ChatFormat`] puts a template and a tokenizer together: the prompt's ids and the tokens that
//!   end the model's turn.
//!
//! Rendered text becomes ids as transformers makes them: with the tokenizer's special-token parsing
//! (so `<|eot_id|>` in the text is its id) and without the tokens its post-processor adds, so the
//! begin-of-text token is there only if the template writes `bos_token`. A template from a GGUF
//! file follows llama.cpp instead ([`BosRule::Once`]): the tokenizer's bos is added when the
//! tokenizer adds one to text and the template did not write it.

mod builtin;
mod hf_dialect;
mod render;
mod strftime;
mod template;
#[cfg(test)]
mod tests;

pub use builtin::{BUILTIN_NAME, BUILTIN_SOURCE};
pub use template::{BosRule, ChatTemplate};

use crate::tokenizer::Tokenizer;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

/// Special tokens that end a turn in the common chat formats. Those the tokenizer has as special
/// tokens stop generation, besides its end-of-sequence ids.
pub const END_OF_TURN_TOKENS: [&str; 8] = [
    "<|eot_id|>",
    "<|eom_id|>",
    "<|im_end|>",
    "<|end_of_text|>",
    "<|endoftext|>",
    "<|end|>",
    "<end_of_turn>",
    "<|return|>",
];

/// Why a chat prompt could not be made. Every variant names the file or the template it concerns.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ChatError {
    /// A file could not be read.
    #[error("{file}: cannot read: {message}")]
    Io {
        /// The file.
        file: String,
        /// The OS error.
        message: String,
    },
    /// A field that holds the template, or a special token it uses, has the wrong form.
    #[error("{file}: field '{field}': {message}")]
    Field {
        /// The file (or artifact section).
        file: String,
        /// The field.
        field: String,
        /// What is wrong with it.
        message: String,
    },
    /// The template does not parse, or failed while rendering (an unknown function, a type error).
    #[error("{template}: {message}")]
    Template {
        /// Where the template came from.
        template: String,
        /// What minijinja said, with the template's line.
        message: String,
    },
    /// The template called `raise_exception`: it refuses this conversation.
    #[error(
        "{template}: the chat template refused the conversation (raise_exception{line}): {message}"
    )]
    Raised {
        /// Where the template came from.
        template: String,
        /// `, line N` when known.
        line: String,
        /// The template's message.
        message: String,
    },
    /// The tokenizer failed, or lacks a token the format needs.
    #[error("{0}")]
    Tokenizer(String),
}

/// One message of a conversation, as transformers' templates see it (`message['role']`,
/// `message['content']`).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Message {
    /// `system`, `user`, `assistant` (or another role the template knows, such as `tool`).
    pub role: String,
    /// The text.
    pub content: String,
}

impl Message {
    /// A message from `role`.
    pub fn new(role: &str, content: &str) -> Message {
        Message {
            role: role.to_string(),
            content: content.to_string(),
        }
    }

    /// Instructions for the assistant.
    pub fn system(content: &str) -> Message {
        Message::new("system", content)
    }

    /// What the person said.
    pub fn user(content: &str) -> Message {
        Message::new("user", content)
    }

    /// What the model said.
    pub fn assistant(content: &str) -> Message {
        Message::new("assistant", content)
    }
}

/// A chat template made ready for one tokenizer: renders conversations, encodes them, and knows
/// which tokens end the model's turn.
pub struct ChatFormat {
    template: ChatTemplate,
    builtin: bool,
    env: minijinja::Environment<'static>,
    bos_token: Option<String>,
    eos_token: Option<String>,
    stop_tokens: Vec<u32>,
    /// `strftime_now`'s clock: unix seconds, or `i64::MIN` for the system clock.
    clock: Arc<AtomicI64>,
}

impl std::fmt::Debug for ChatFormat {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChatFormat")
            .field("template", &self.template.origin)
            .field("builtin", &self.builtin)
            .field("bos_token", &self.bos_token)
            .field("eos_token", &self.eos_token)
            .field("stop_tokens", &self.stop_tokens)
            .finish_non_exhaustive()
    }
}

impl ChatFormat {
    /// The model's `template` for `tokenizer`, or the built-in 2B-4T format when the model has
    /// none (which needs the tokenizer to have `<|eot_id|>`). A template that does not parse is an
    /// error here. `bos_token` and `eos_token` are the template's own when it names them (a Hugging
    /// Face folder's `tokenizer_config.json`), else the tokenizer's bos and first eos.
    pub fn new(
        template: Option<ChatTemplate>,
        tokenizer: &Tokenizer,
    ) -> Result<ChatFormat, ChatError> {
        let builtin = template.is_none();
        let template = match template {
            Some(t) => t,
            None => builtin::template(tokenizer)?,
        };
        let clock = Arc::new(AtomicI64::new(i64::MIN));
        let env = render::environment(&template, Arc::clone(&clock))?;
        let content = |id: Option<u32>| id.and_then(|i| tokenizer.token_content(i));
        let bos_token = template
            .bos_token
            .clone()
            .or_else(|| content(tokenizer.bos()));
        let eos_token = template
            .eos_token
            .clone()
            .or_else(|| content(tokenizer.eos().first().copied()));
        let mut stop_tokens: Vec<u32> = tokenizer.eos().to_vec();
        for t in END_OF_TURN_TOKENS {
            if let Some(id) = tokenizer.special_token_id(t)
                && !stop_tokens.contains(&id)
            {
                stop_tokens.push(id);
            }
        }
        Ok(ChatFormat {
            template,
            builtin,
            env,
            bos_token,
            eos_token,
            stop_tokens,
            clock,
        })
    }

    /// The template in use.
    pub fn template(&self) -> &ChatTemplate {
        &self.template
    }

    /// Whether this is the built-in format (the model has no template).
    pub fn is_builtin(&self) -> bool {
        self.builtin
    }

    /// Which template this is, for the user: `the model's (…/tokenizer_config.json)` or
    /// `built-in bitnet-b1.58-2B-4T (the model has none)`.
    pub fn describe(&self) -> String {
        if self.builtin {
            format!("built-in {BUILTIN_NAME} (the model has none)")
        } else {
            format!("the model's ({})", self.template.origin)
        }
    }

    /// Fixes `strftime_now`'s clock at `unix_seconds` (UTC), for prompts that must not change
    /// with the date; by default it reads the system clock.
    pub fn set_clock(&self, unix_seconds: i64) {
        self.clock.store(unix_seconds, Ordering::Relaxed);
    }

    /// The prompt text for `messages`; `add_generation_prompt` appends what starts the assistant's
    /// reply.
    pub fn render(
        &self,
        messages: &[Message],
        add_generation_prompt: bool,
    ) -> Result<String, ChatError> {
        render::render(
            &self.env,
            &self.template.origin,
            messages,
            add_generation_prompt,
            self.bos_token.as_deref(),
            self.eos_token.as_deref(),
        )
    }

    /// The prompt's token ids: the rendered text encoded with special tokens parsed and nothing
    /// added, except the bos that [`BosRule::Once`] adds.
    pub fn encode(
        &self,
        tokenizer: &Tokenizer,
        messages: &[Message],
        add_generation_prompt: bool,
    ) -> Result<Vec<u32>, ChatError> {
        let text = self.render(messages, add_generation_prompt)?;
        let tok = |e: crate::tokenizer::TokenizerError| ChatError::Tokenizer(e.to_string());
        let mut ids = tokenizer.encode(&text, false).map_err(tok)?;
        if self.template.bos == BosRule::Once
            && let Some(bos) = tokenizer.bos()
            && ids.first() != Some(&bos)
            && tokenizer.adds_bos().map_err(tok)?
        {
            ids.insert(0, bos);
        }
        Ok(ids)
    }

    /// The tokens that end the model's turn: the tokenizer's end-of-sequence ids and those of
    /// [`END_OF_TURN_TOKENS`] it has as special tokens.
    pub fn stop_tokens(&self) -> &[u32] {
        &self.stop_tokens
    }
}
