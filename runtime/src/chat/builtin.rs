//! The built-in chat format, used only when a model has no template: BitNet b1.58 2B-4T's
//! (formats.md §2.5). It is Microsoft's reference `ChatFormat` (`gpu/tokenizer.py`): the
//! begin-of-text token once, then each message as `Role: content<|eot_id|>` with the content
//! trimmed, then `Assistant: ` for the reply. Written as a template, it is the `chat_template` of
//! the `microsoft/bitnet-b1.58-2B-4T` checkpoint with `bos_token` in front: that template does not
//! write it, and transformers adds nothing to the rendered text, whereas the reference format
//! starts with it.

use super::{BosRule, ChatError, ChatTemplate};
use crate::tokenizer::Tokenizer;

/// The built-in format's name, as the output names it.
pub const BUILTIN_NAME: &str = "bitnet-b1.58-2B-4T";

/// The built-in format as a Jinja template.
pub const BUILTIN_SOURCE: &str = concat!(
    "{{ bos_token }}",
    "{% set loop_messages = messages %}",
    "{% for message in loop_messages %}",
    "{% set content = message['role'] | capitalize + ': '+ message['content'] | trim + '<|eot_id|>' %}",
    "{{ content }}",
    "{% endfor %}",
    "{% if add_generation_prompt %}{{ 'Assistant: ' }}{% endif %}",
);

/// The token that ends each message.
const EOT: &str = "<|eot_id|>";

/// The built-in template, for a tokenizer that has `<|eot_id|>` as a special token (without it the
/// format's turns could not end).
pub(super) fn template(tokenizer: &Tokenizer) -> Result<ChatTemplate, ChatError> {
    if tokenizer.special_token_id(EOT).is_none() {
        return Err(ChatError::Tokenizer(format!(
            "{}: the model has no chat template, and the built-in one ({BUILTIN_NAME}) needs the \
             special token {EOT}, which the tokenizer does not have",
            tokenizer.source()
        )));
    }
    Ok(ChatTemplate {
        source: BUILTIN_SOURCE.to_string(),
        origin: format!("built-in {BUILTIN_NAME}"),
        bos_token: None,
        eos_token: None,
        bos: BosRule::AsWritten,
    })
}
