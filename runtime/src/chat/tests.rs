//! Unit tests of chat templates: the built-in format, Hugging Face's dialect (`raise_exception`,
//! `tojson` as Python's `json.dumps` writes, `strftime_now`, Python string methods, loop controls,
//! `{% generation %}`), the bos rules, stop tokens, and where templates are read from.

use super::*;
use crate::tokenizer::GgufVocab;

const BOT: &str = "<|begin_of_text|>";

/// A byte-level tokenizer: ids 0..256 are the bytes, then the special tokens `<|begin_of_text|>`
/// (256, bos, added to text), `<|end_of_text|>` (257, eos), `<|eot_id|>` (258), `<|im_end|>` (259)
/// and the ordinary token `<|im_end|>x` (260) which is no special token.
fn tokenizer(with_eot: bool) -> Tokenizer {
    let mut tokens: Vec<String> = (0..256u32)
        .map(|b| {
            // GPT-2's byte → character table for the bytes the tests use (printable ASCII), and
            // stand-ins for the others.
            char::from_u32(if (33..=126).contains(&b) { b } else { 256 + b })
                .unwrap()
                .to_string()
        })
        .collect();
    let mut token_types = vec![1; 256];
    for t in [BOT, "<|end_of_text|>", "<|eot_id|>", "<|im_end|>"] {
        tokens.push(t.to_string());
        token_types.push(3);
    }
    if !with_eot {
        tokens[258] = "<|not_eot|>".into();
    }
    tokens.push("<|im_end|>x".into());
    // The one merge a BPE model needs (it never fires on the tests' text).
    tokens.push("12".into());
    token_types.extend([1, 1]);
    let vocab = GgufVocab {
        model: "gpt2".into(),
        tokens,
        token_types,
        merges: vec!["1 2".into()],
        bos: Some(256),
        eos: Some(257),
        add_bos: Some(true),
        ..GgufVocab::default()
    };
    Tokenizer::from_gguf_vocab(&vocab, "test.gguf").unwrap()
}

fn template(source: &str) -> ChatTemplate {
    ChatTemplate {
        source: source.to_string(),
        origin: "test.json (chat_template)".into(),
        bos_token: None,
        eos_token: None,
        bos: BosRule::AsWritten,
    }
}

fn render(source: &str, messages: &[Message]) -> Result<String, ChatError> {
    ChatFormat::new(Some(template(source)), &tokenizer(true))?.render(messages, true)
}

fn ids(text: &str) -> Vec<u32> {
    text.bytes().map(u32::from).collect()
}

#[test]
fn the_builtin_format_is_the_2b_4t_reference() {
    let tok = tokenizer(true);
    let f = ChatFormat::new(None, &tok).unwrap();
    assert!(f.is_builtin());
    assert_eq!(
        f.describe(),
        "built-in bitnet-b1.58-2B-4T (the model has none)"
    );
    let messages = [Message::system(" Be brief. "), Message::user("Hi\n")];
    assert_eq!(
        f.render(&messages, true).unwrap(),
        format!("{BOT}System: Be brief.<|eot_id|>User: Hi<|eot_id|>Assistant: ")
    );
    assert_eq!(f.render(&[], true).unwrap(), format!("{BOT}Assistant: "));
    assert_eq!(f.render(&[], false).unwrap(), BOT);
    // The template writes bos, so it is there once; `<|eot_id|>` is its id.
    let mut want = vec![256];
    want.extend(ids("User: Hi"));
    want.push(258);
    want.extend(ids("Assistant: "));
    assert_eq!(f.encode(&tok, &[Message::user("Hi")], true).unwrap(), want);
    assert_eq!(f.stop_tokens(), &[257, 258, 259]);
}

#[test]
fn the_builtin_format_needs_eot() {
    let e = ChatFormat::new(None, &tokenizer(false)).unwrap_err();
    let msg = e.to_string();
    assert!(
        msg.contains("test.gguf") && msg.contains("<|eot_id|>") && msg.contains("built-in"),
        "{msg}"
    );
}

#[test]
fn the_models_template_is_named_and_only_special_tokens_stop() {
    let tok = tokenizer(true);
    let f = ChatFormat::new(Some(template("{{ messages[0].content }}")), &tok).unwrap();
    assert!(!f.is_builtin());
    assert_eq!(f.describe(), "the model's (test.json (chat_template))");
    // `<|im_end|>x` (260) is an ordinary token: it does not stop.
    assert!(!f.stop_tokens().contains(&260));
}

#[test]
fn bos_is_added_only_by_the_once_rule_and_never_twice() {
    let tok = tokenizer(true);
    let m = [Message::user("a")];
    let plain = "{% for m in messages %}{{ m.content }}{% endfor %}";
    let with_bos = "{{ bos_token }}{% for m in messages %}{{ m.content }}{% endfor %}";
    let encode = |source: &str, bos: BosRule| {
        let mut t = template(source);
        t.bos = bos;
        ChatFormat::new(Some(t), &tok)
            .unwrap()
            .encode(&tok, &m, true)
            .unwrap()
    };
    assert_eq!(encode(plain, BosRule::AsWritten), ids("a"));
    assert_eq!(encode(plain, BosRule::Once), [256, 97]);
    assert_eq!(encode(with_bos, BosRule::AsWritten), [256, 97]);
    assert_eq!(encode(with_bos, BosRule::Once), [256, 97]);
}

#[test]
fn special_tokens_come_from_the_template_before_the_tokenizer() {
    let tok = tokenizer(true);
    let source = "{{ bos_token }}|{{ eos_token }}";
    let f = ChatFormat::new(Some(template(source)), &tok).unwrap();
    assert_eq!(
        f.render(&[], false).unwrap(),
        format!("{BOT}|<|end_of_text|>")
    );
    let mut t = template(source);
    t.eos_token = Some("<|eot_id|>".into());
    let f = ChatFormat::new(Some(t), &tok).unwrap();
    assert_eq!(f.render(&[], false).unwrap(), format!("{BOT}|<|eot_id|>"));
}

#[test]
fn raise_exception_names_the_template_and_the_message() {
    let source = "{% if messages[0].role != 'user' %}\n{{ raise_exception('Conversation roles must alternate') }}\n{% endif %}";
    let e = render(source, &[Message::assistant("x")]).unwrap_err();
    assert_eq!(
        e,
        ChatError::Raised {
            template: "test.json (chat_template)".into(),
            line: ", line 2".into(),
            message: "Conversation roles must alternate".into(),
        }
    );
    assert_eq!(
        e.to_string(),
        "test.json (chat_template): the chat template refused the conversation \
         (raise_exception, line 2): Conversation roles must alternate"
    );
    // Raised inside a macro, it is still the template's message.
    let source = "{% macro check() %}{{ raise_exception('no') }}{% endmacro %}{{ check() }}";
    assert!(
        matches!(render(source, &[]), Err(ChatError::Raised { message, .. }) if message == "no")
    );
}

#[test]
fn template_errors_name_the_template_and_line() {
    let e = ChatFormat::new(
        Some(template("{% for m in messages %}\n{{ m.content }")),
        &tokenizer(true),
    )
    .unwrap_err();
    let msg = e.to_string();
    assert!(
        msg.starts_with("test.json (chat_template): syntax error, line 2"),
        "{msg}"
    );
    let e = render("{{ no_such_function() }}", &[])
        .unwrap_err()
        .to_string();
    assert!(e.contains("unknown function"), "{e}");
}

#[test]
fn tojson_writes_like_python_json_dumps() {
    let source = r#"{% set x = {"name": "get_weather", "params": {"city": "Zürich", "temps": [1, 2.5, 123.0, -0.5], "ok": true, "none": none, "q": "a\"b\\c\n\t"}, "empty": [], "e": {}} %}{{ x | tojson }}
{{ x | tojson(indent=2) }}
{{ x | tojson(ensure_ascii=true, sort_keys=true, separators=[",", ":"]) }}"#;
    let out = render(source, &[]).unwrap();
    let want = r#"{"name": "get_weather", "params": {"city": "Zürich", "temps": [1, 2.5, 123.0, -0.5], "ok": true, "none": null, "q": "a\"b\\c\n\t"}, "empty": [], "e": {}}
{
  "name": "get_weather",
  "params": {
    "city": "Zürich",
    "temps": [
      1,
      2.5,
      123.0,
      -0.5
    ],
    "ok": true,
    "none": null,
    "q": "a\"b\\c\n\t"
  },
  "empty": [],
  "e": {}
}
{"e":{},"empty":[],"name":"get_weather","params":{"city":"Z\u00fcrich","none":null,"ok":true,"q":"a\"b\\c\n\t","temps":[1,2.5,123.0,-0.5]}}"#;
    assert_eq!(out, want);
}

#[test]
fn floats_are_written_as_python_writes_them() {
    let cases = [
        (1.0, "1.0"),
        (1e-5, "1e-05"),
        (1e16, "1e+16"),
        (1.5e16, "1.5e+16"),
        (1e22, "1e+22"),
        (0.0001, "0.0001"),
        (12345.678, "12345.678"),
        (1e-7, "1e-07"),
        (0.1 + 0.2, "0.30000000000000004"),
        (-0.5, "-0.5"),
        (f64::NAN, "NaN"),
        (f64::NEG_INFINITY, "-Infinity"),
    ];
    for (f, want) in cases {
        assert_eq!(hf_dialect::python_float(f), want, "{f}");
    }
}

#[test]
fn strftime_now_reads_the_clock() {
    let f = ChatFormat::new(
        Some(template("{{ strftime_now('%d %b %Y') }}")),
        &tokenizer(true),
    )
    .unwrap();
    f.set_clock(1_721_999_109);
    assert_eq!(f.render(&[], false).unwrap(), "26 Jul 2024");
    f.set_clock(0);
    assert_eq!(f.render(&[], false).unwrap(), "01 Jan 1970");
}

#[test]
fn python_methods_loop_controls_and_trimmed_blocks_work() {
    let source = "{% for m in messages %}\n    {% if m.content.startswith('skip') %}{% continue %}{% endif %}\n    {% if m.content == 'stop' %}{% break %}{% endif %}\n{{ m.role.upper() }}={{ m.content.strip() }}|{{ m.content.split(',')|length }}\n{% endfor %}";
    let messages = [
        Message::user(" a,b "),
        Message::assistant("skip me"),
        Message::user("c"),
        Message::user("stop"),
        Message::user("never"),
    ];
    assert_eq!(render(source, &messages).unwrap(), "USER=a,b|2\nUSER=c|1\n");
    // Python's None and `is defined` on the variables transformers passes.
    let source = "{{ tools is none }} {{ documents is defined }} {{ add_generation_prompt }} {{ nothing is defined }}";
    assert_eq!(render(source, &[]).unwrap(), "True True True False");
}

#[test]
fn generation_blocks_render_their_body() {
    let source = "{% for m in messages %}{%- generation -%}\n [{{ m.content }}] \n{%- endgeneration %}{% endfor %}";
    assert_eq!(
        render::generation_blocks_as_ifs(source),
        "{% for m in messages %}{%- if true -%}\n [{{ m.content }}] \n{%- endif %}{% endfor %}"
    );
    assert_eq!(render(source, &[Message::user("x")]).unwrap(), "[x]");
    // Text that only looks like the start of a tag is kept as it is, and minijinja judges it.
    for s in ["{%}", "a {% b", "{%-%}", "x %} {%generation%}"] {
        let out = render::generation_blocks_as_ifs(s);
        assert_eq!(out, s.replace("{%generation%}", "{% if true %}"));
    }
}

#[test]
fn templates_are_read_from_tokenizer_config() {
    let config = serde_json::json!({
        "chat_template": [{"name": "tool_use", "template": "T"}, {"name": "default", "template": "D"}],
        "bos_token": {"content": "<s>", "__type": "AddedToken"},
        "eos_token": "</s>",
    });
    let t = template::from_tokenizer_config(&config, "c.json")
        .unwrap()
        .unwrap();
    assert_eq!(
        (t.source.as_str(), t.origin.as_str()),
        ("D", "c.json (chat_template)")
    );
    assert_eq!(
        (t.bos_token.as_deref(), t.eos_token.as_deref()),
        (Some("<s>"), Some("</s>"))
    );
    assert_eq!(t.bos, BosRule::AsWritten);
    let none = serde_json::json!({"chat_template": null});
    assert_eq!(
        template::from_tokenizer_config(&none, "c.json").unwrap(),
        None
    );
    let no_default = serde_json::json!({"chat_template": [{"name": "rag", "template": "R"}]});
    let e = template::from_tokenizer_config(&no_default, "c.json")
        .unwrap_err()
        .to_string();
    assert_eq!(
        e,
        "c.json: field 'chat_template': a list of templates without \"default\" (it has rag)"
    );
    let wrong = serde_json::json!({"chat_template": 3});
    assert!(template::from_tokenizer_config(&wrong, "c.json").is_err());
}

#[test]
fn the_artifact_section_round_trips() {
    let mut t = ChatTemplate::from_gguf("{{ x }}", "m.gguf");
    t.eos_token = Some("</s>".into());
    let bytes = t.to_section();
    assert_eq!(
        String::from_utf8(bytes.clone()).unwrap(),
        r#"{"bos":"once","bos_token":null,"eos_token":"</s>","origin":"m.gguf (tokenizer.chat_template)","source":"{{ x }}"}"#
    );
    let back = ChatTemplate::from_section(&bytes, "m.bnx").unwrap();
    assert_eq!(
        back.origin,
        "m.bnx (chat_template section), from m.gguf (tokenizer.chat_template)"
    );
    assert_eq!(
        (back.source, back.bos, back.eos_token),
        (t.source, t.bos, t.eos_token)
    );
    let e = ChatTemplate::from_section(br#"{"bos":"twice","source":""}"#, "m.bnx").unwrap_err();
    assert!(
        e.to_string()
            .starts_with("m.bnx (chat_template section): field 'bos'"),
        "{e}"
    );
}
