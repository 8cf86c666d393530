//! The one place a chat request's messages become a prompt. Today every model gets the BitNet
//! b1.58 2B-4T format (`bitnet_runtime::chat`: its tokenizer must know `<|eot_id|>`); a model's own
//! chat template replaces it here without the routes changing.

use bitnet_runtime::chat::{self, ChatPrompt, Role};
use bitnet_runtime::tokenizer::Tokenizer;

/// The prompt for `messages` and the tokens that end the reply, or why the model cannot chat.
pub fn encode(tokenizer: &Tokenizer, messages: &[(Role, String)]) -> Result<ChatPrompt, String> {
    let borrowed: Vec<(Role, &str)> = messages.iter().map(|(r, c)| (*r, c.as_str())).collect();
    chat::encode(tokenizer, &borrowed)
}
