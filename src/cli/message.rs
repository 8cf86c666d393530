//! An error as one line for people: anyhow's chain joined by `: `, without the repetitions that
//! layered errors make — a context (the model's path) that the next message starts with anyway,
//! and a cause (an OS error) that the message before already ends with.

/// The error's chain as one line, each piece said once.
pub fn one_line(e: &anyhow::Error) -> String {
    let parts: Vec<String> = e.chain().map(ToString::to_string).collect();
    let mut kept: Vec<&str> = Vec::new();
    for (i, part) in parts.iter().enumerate() {
        if parts
            .get(i + 1)
            .is_some_and(|next| next.starts_with(part.as_str()))
        {
            continue;
        }
        if kept
            .last()
            .is_some_and(|last| last.ends_with(part.as_str()))
        {
            continue;
        }
        kept.push(part);
    }
    kept.join(": ")
}

#[cfg(test)]
mod tests {
    use super::one_line;
    use anyhow::Context;

    #[test]
    fn a_path_and_an_os_error_are_said_once() {
        let io = std::io::Error::new(std::io::ErrorKind::NotFound, "no such file");
        let inner = anyhow::Error::new(io).context("m.gguf: no such file");
        let e = Err::<(), _>(inner).context("m.gguf").unwrap_err();
        assert_eq!(one_line(&e), "m.gguf: no such file");
        let e = anyhow::anyhow!("tokens out of range").context("m.gguf");
        assert_eq!(one_line(&e), "m.gguf: tokens out of range");
    }
}
