//! A spinner on stderr while a model compiles or loads, naming the stage and the time so far. It
//! shows only when stderr is a terminal; in pipes and CI nothing is drawn.

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::io::IsTerminal;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

/// The spinner (hidden when stderr is not a terminal).
pub struct Progress {
    bar: ProgressBar,
}

impl Progress {
    /// Starts a spinner for `model`.
    pub fn start(model: &Path) -> Progress {
        let bar = if std::io::stderr().is_terminal() {
            let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr());
            if let Ok(style) = ProgressStyle::with_template("{spinner} {prefix} {msg} [{elapsed}]")
            {
                bar.set_style(style);
            }
            bar.set_prefix(model.display().to_string());
            bar.enable_steady_tick(Duration::from_millis(120));
            bar
        } else {
            ProgressBar::hidden()
        };
        Progress { bar }
    }

    /// A callback for `bitnetc::Options::on_stage` that shows the stage's name.
    pub fn stage_callback(&self) -> bitnetc::jit::StageCallback {
        let bar = self.bar.clone();
        Arc::new(move |stage: &str| {
            let what = match stage {
                "import" => "importing",
                "compile" => "compiling",
                "load" => "loading",
                other => other,
            };
            bar.set_message(what.to_string());
        })
    }

    /// Clears the spinner.
    pub fn finish(&self) {
        self.bar.finish_and_clear();
    }
}
