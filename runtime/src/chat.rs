//! Chat prompts in the format of BitNet b1.58 2B-4T (formats.md §2.5): the begin-of-text token once,
//! then each message as `Role: content<|eot_id|>` with the content trimmed, then `Assistant: ` for the
//! model to complete. Generation stops at `<|eot_id|>`.
//!
//! The text is rendered as transformers' `chat_template` renders it and encoded in one piece, with the
//! tokenizer's own special-token handling (so `<|eot_id|>` becomes its id) and its post-processor
//! adding the begin-of-text token.

use crate::tokenizer::Tokenizer;

/// The end-of-turn marker.
pub const EOT: &str = "<|eot_id|>";

/// Who said something.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// Instructions for the assistant.
    System,
    /// The person.
    User,
    /// The model.
    Assistant,
}

impl Role {
    /// The prefix the format writes (`User`).
    pub fn label(self) -> &'static str {
        match self {
            Role::System => "System",
            Role::User => "User",
            Role::Assistant => "Assistant",
        }
    }
}

/// Renders `messages` as the prompt text, ending with `Assistant: ` for the reply.
pub fn render(messages: &[(Role, &str)]) -> String {
    let mut s = String::new();
    for (role, content) in messages {
        s.push_str(role.label());
        s.push_str(": ");
        s.push_str(content.trim());
        s.push_str(EOT);
    }
    s.push_str("Assistant: ");
    s
}

/// A chat prompt encoded for the model, and the tokens that end the reply.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChatPrompt {
    /// The token ids, starting with the begin-of-text token.
    pub ids: Vec<u32>,
    /// `<|eot_id|>` and the tokenizer's end-of-sequence ids.
    pub stop_tokens: Vec<u32>,
}

/// Encodes `messages` in the 2B-4T chat format. The tokenizer must know `<|eot_id|>`.
pub fn encode(tokenizer: &Tokenizer, messages: &[(Role, &str)]) -> Result<ChatPrompt, String> {
    let eot = tokenizer.token_id(EOT).ok_or_else(|| {
        format!(
            "{}: the tokenizer has no {EOT} token, so it does not use the BitNet b1.58 2B-4T chat format (--chat)",
            tokenizer.source()
        )
    })?;
    let ids = tokenizer
        .encode(&render(messages), true)
        .map_err(|e| e.to_string())?;
    let mut stop_tokens = vec![eot];
    stop_tokens.extend(tokenizer.eos().iter().copied().filter(|&e| e != eot));
    Ok(ChatPrompt { ids, stop_tokens })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_like_the_chat_template() {
        assert_eq!(
            render(&[(Role::System, " Be brief. "), (Role::User, "Hi\n")]),
            "System: Be brief.<|eot_id|>User: Hi<|eot_id|>Assistant: "
        );
        assert_eq!(render(&[]), "Assistant: ");
    }
}
