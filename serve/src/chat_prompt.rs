//! The one place a chat request's messages become a prompt: the model's chat format (its own
//! template, or the built-in 2B-4T format when it has none; `bitnet_runtime::chat`) renders them
//! with the generation prompt appended and names the tokens that end the reply.

use bitnet_runtime::chat::{ChatFormat, Message};
use bitnet_runtime::tokenizer::Tokenizer;

/// Who wrote a message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// `system` (and OpenAI's `developer`).
    System,
    /// `user`.
    User,
    /// `assistant`.
    Assistant,
}

impl Role {
    /// The role's name in a chat template.
    pub fn name(self) -> &'static str {
        match self {
            Role::System => "system",
            Role::User => "user",
            Role::Assistant => "assistant",
        }
    }
}

/// A chat request's prompt.
#[derive(Clone, Debug)]
pub struct ChatPrompt {
    /// The prompt's token ids.
    pub ids: Vec<u32>,
    /// The tokens that end the reply.
    pub stop_tokens: Vec<u32>,
}

/// The prompt for `messages` and the tokens that end the reply, or why the model cannot chat.
pub fn encode(
    format: &Result<ChatFormat, String>,
    tokenizer: &Tokenizer,
    messages: &[(Role, String)],
) -> Result<ChatPrompt, String> {
    let format = format.as_ref().map_err(Clone::clone)?;
    let messages: Vec<Message> = messages
        .iter()
        .map(|(r, c)| Message::new(r.name(), c))
        .collect();
    let ids = format
        .encode(tokenizer, &messages, true)
        .map_err(|e| e.to_string())?;
    Ok(ChatPrompt {
        ids,
        stop_tokens: format.stop_tokens().to_vec(),
    })
}
