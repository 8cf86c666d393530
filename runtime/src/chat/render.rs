//! Rendering a chat template with minijinja as transformers renders it with Jinja2: blocks trimmed
//! (`trim_blocks`, `lstrip_blocks`), loop controls, `raise_exception`, `tojson`, `strftime_now`,
//! Python's string and dict methods (minijinja-contrib's `pycompat`), Python's `is iterable` (none
//! is not), and the variables
//! `messages`, `add_generation_prompt`, `tools` and `documents` (both none), `bos_token` and
//! `eos_token` (when the model has them).
//!
//! transformers' `{% generation %}…{% endgeneration %}` block (it marks the assistant's tokens for
//! training masks and renders its body unchanged) becomes `{% if true %}…{% endif %}`, with the
//! tag's whitespace control kept.

use super::hf_dialect;
use super::{ChatError, ChatTemplate, Message};
use minijinja::{Environment, ErrorKind, Value};
use std::sync::Arc;
use std::sync::atomic::AtomicI64;

/// The name the template has in its environment.
const NAME: &str = "chat_template";

/// An environment holding `template`, compiled: a syntax error is reported here.
pub(super) fn environment(
    template: &ChatTemplate,
    clock: Arc<AtomicI64>,
) -> Result<Environment<'static>, ChatError> {
    let mut env = Environment::new();
    env.set_trim_blocks(true);
    env.set_lstrip_blocks(true);
    env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
    env.add_function("raise_exception", hf_dialect::raise_exception);
    env.add_function("strftime_now", move |format: String| {
        hf_dialect::strftime_now(&format, &clock)
    });
    env.add_filter("tojson", hf_dialect::tojson);
    env.add_test("iterable", hf_dialect::is_iterable);
    env.add_template_owned(NAME, generation_blocks_as_ifs(&template.source))
        .map_err(|e| error(&template.origin, &e))?;
    Ok(env)
}

/// Renders the template in `env` for `messages`.
pub(super) fn render(
    env: &Environment<'static>,
    origin: &str,
    messages: &[Message],
    add_generation_prompt: bool,
    bos_token: Option<&str>,
    eos_token: Option<&str>,
) -> Result<String, ChatError> {
    let template = env.get_template(NAME).map_err(|e| error(origin, &e))?;
    // An absent special token stays undefined, as in transformers (which passes only those the
    // tokenizer has).
    let mut ctx = std::collections::BTreeMap::new();
    ctx.insert("messages", Value::from_serialize(messages));
    ctx.insert("add_generation_prompt", Value::from(add_generation_prompt));
    ctx.insert("tools", Value::from(()));
    ctx.insert("documents", Value::from(()));
    if let Some(b) = bos_token {
        ctx.insert("bos_token", Value::from(b));
    }
    if let Some(e) = eos_token {
        ctx.insert("eos_token", Value::from(e));
    }
    template.render(ctx).map_err(|e| error(origin, &e))
}

/// A minijinja error as a [`ChatError`]: `raise_exception`'s message as [`ChatError::Raised`],
/// anything else with its kind, detail and line.
fn error(origin: &str, e: &minijinja::Error) -> ChatError {
    let line = e.line().map_or_else(String::new, |l| format!(", line {l}"));
    let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(c) = cause {
        if let Some(m) = c.downcast_ref::<minijinja::Error>()
            && let Some(message) = m.detail().and_then(hf_dialect::raised_message)
        {
            return ChatError::Raised {
                template: origin.to_string(),
                line,
                message: message.to_string(),
            };
        }
        cause = c.source();
    }
    let what = match e.kind() {
        ErrorKind::SyntaxError => "syntax error",
        ErrorKind::UnknownFunction => "unknown function",
        ErrorKind::UnknownFilter => "unknown filter",
        ErrorKind::UnknownTest => "unknown test",
        ErrorKind::UnknownMethod => "unknown method",
        _ => "cannot render",
    };
    let detail = e
        .detail()
        .map_or_else(|| e.kind().to_string(), str::to_string);
    ChatError::Template {
        template: origin.to_string(),
        message: format!("{what}{line}: {detail}"),
    }
}

/// `source` with each `{% generation %}` tag as `{% if true %}` and `{% endgeneration %}` as
/// `{% endif %}`, whitespace control (`-`, `+`) kept.
pub(super) fn generation_blocks_as_ifs(source: &str) -> String {
    let mut out = String::with_capacity(source.len());
    let mut rest = source;
    while let Some(start) = rest.find("{%") {
        let tag = &rest[start..];
        // The tag's end is searched after its opening, so `{%}` is no tag.
        let Some(end) = tag.get(2..).and_then(|t| t.find("%}")).map(|e| e + 2) else {
            break;
        };
        out.push_str(&rest[..start]);
        let inner = &tag[2..end];
        let left = inner.strip_prefix(['-', '+']);
        let body = left.unwrap_or(inner);
        let right = body.strip_suffix(['-', '+']);
        let word = right.unwrap_or(body).trim();
        let replacement = match word {
            "generation" => Some("if true"),
            "endgeneration" => Some("endif"),
            _ => None,
        };
        match replacement {
            Some(r) => {
                out.push_str("{%");
                out.push_str(&inner[..inner.len() - left.map_or(inner.len(), str::len)]);
                out.push(' ');
                out.push_str(r);
                out.push(' ');
                out.push_str(&body[right.map_or(body.len(), str::len)..]);
                out.push_str("%}");
            }
            None => out.push_str(&tag[..end + 2]),
        }
        rest = &tag[end + 2..];
    }
    out.push_str(rest);
    out
}
