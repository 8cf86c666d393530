//! The engine with a stand-in model whose next token is a function of the feed: prompts go in
//! chunks of at most `prefill_chunk`, a dropped receiver frees its slot for the next request, and
//! `cancel_all` ends running and queued requests.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use super::*;
use bitnet_runtime::sampling::SamplingParams;
use tokio::sync::mpsc::{UnboundedReceiver, unbounded_channel};

/// Every feed a stand-in model ran: (slot, tokens, pos).
type Feeds = Arc<Mutex<Vec<(usize, usize, u64)>>>;

/// Logits that pick `3 + (7·pos + last) mod 900` (never the end-of-sequence id 2), after a short
/// sleep so that a long generation takes long; records every feed's (slot, length, pos).
struct Stand {
    slots: usize,
    logits: Vec<f32>,
    feeds: Feeds,
}

impl StepModel for Stand {
    fn slots(&self) -> usize {
        self.slots
    }
    fn context(&self) -> u64 {
        1 << 20
    }
    fn vocab(&self) -> u64 {
        1000
    }
    fn step(&mut self, feeds: &[Feed<'_>], out: &mut StepOut<'_>) {
        std::thread::sleep(Duration::from_micros(200));
        for (i, f) in feeds.iter().enumerate() {
            self.feeds
                .lock()
                .unwrap()
                .push((f.slot, f.tokens.len(), f.pos));
            let pos = f.pos + f.tokens.len() as u64 - 1;
            let last = *f.tokens.last().unwrap() as u64;
            let next = 3 + (7 * pos + last) % 900;
            self.logits.fill(0.0);
            self.logits[next as usize] = 1.0;
            out(i, Ok(&self.logits));
        }
    }
}

fn tokenizer() -> Arc<Tokenizer> {
    let dir = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../tests/fixtures/hf-tiny/packed"
    );
    Arc::new(Tokenizer::from_hf_dir(dir).unwrap())
}

fn engine(slots: usize, queue: usize, chunk: usize) -> (Engine, Feeds) {
    let feeds = Arc::new(Mutex::new(Vec::new()));
    let model = Stand {
        slots,
        logits: vec![0.0; 1000],
        feeds: Arc::clone(&feeds),
    };
    let options = EngineOptions {
        queue,
        prefill_chunk: chunk,
    };
    let e = Engine::start(
        "stand",
        Box::new(model),
        tokenizer(),
        options,
        Arc::default(),
    )
    .unwrap();
    (e, feeds)
}

fn job(prompt: Vec<u32>, max_tokens: usize) -> (Job, UnboundedReceiver<Event>) {
    let (events, rx) = unbounded_channel();
    let params = GenerateParams {
        max_tokens,
        sampling: SamplingParams::greedy(),
        ..GenerateParams::default()
    };
    let job = Job {
        prompt,
        params,
        events,
        enqueued: Instant::now(),
    };
    (job, rx)
}

/// Every event until the end: the token ids and the last event.
fn drain(rx: &mut UnboundedReceiver<Event>) -> (Vec<u32>, Event) {
    let mut ids = Vec::new();
    loop {
        match rx.blocking_recv() {
            Some(Event::Token { id, .. }) => ids.push(id),
            Some(end) => return (ids, end),
            None => panic!("the engine dropped the request"),
        }
    }
}

#[test]
fn prompts_go_in_chunks_and_tokens_follow_the_model() {
    let (e, feeds) = engine(2, 4, 4);
    let prompt: Vec<u32> = (10..21).collect();
    let (j, mut rx) = job(prompt.clone(), 3);
    e.submit(j).unwrap();
    let (ids, end) = drain(&mut rx);
    // The model's tokens: after the prompt (last 20 at pos 10), then each fed back.
    let mut want = Vec::new();
    let (mut pos, mut last) = (10u64, 20u64);
    for _ in 0..3 {
        let next = 3 + (7 * pos + last) % 900;
        want.push(next as u32);
        pos += 1;
        last = next;
    }
    assert_eq!(ids, want);
    let Event::Done {
        stop,
        prompt_tokens,
        completion_tokens,
        ..
    } = end
    else {
        panic!("{end:?}");
    };
    assert_eq!(
        (stop, prompt_tokens, completion_tokens),
        (StopReason::MaxTokens, 11, 3)
    );
    let lens: Vec<(usize, u64)> = feeds
        .lock()
        .unwrap()
        .iter()
        .map(|&(_, n, p)| (n, p))
        .collect();
    assert_eq!(lens, [(4, 0), (4, 4), (3, 8), (1, 11), (1, 12)]);
    e.join();
}

#[test]
fn a_dropped_receiver_frees_the_slot_and_a_full_queue_refuses() {
    let (e, _) = engine(1, 1, 64);
    let (a, rx_a) = job(vec![1, 5, 6], 1 << 19);
    e.submit(a).unwrap();
    // Once `a` has a token it holds the slot, so `b` waits in the queue and `c` finds it full.
    let mut rx_a = rx_a;
    assert!(matches!(rx_a.blocking_recv(), Some(Event::Token { .. })));
    let (b, mut rx_b) = job(vec![1, 7], 5);
    e.submit(b).unwrap();
    let (c, _rx_c) = job(vec![1, 8], 5);
    assert_eq!(e.submit(c).unwrap_err(), Refused::Full);
    drop(rx_a);
    let (ids, end) = drain(&mut rx_b);
    assert_eq!(ids.len(), 5);
    assert!(matches!(end, Event::Done { .. }), "{end:?}");
    e.join();
}

#[test]
fn cancel_all_ends_running_and_queued_requests() {
    let (e, _) = engine(1, 2, 64);
    let (a, mut rx_a) = job(vec![1, 5, 6], 1 << 19);
    e.submit(a).unwrap();
    assert!(matches!(rx_a.blocking_recv(), Some(Event::Token { .. })));
    let (b, mut rx_b) = job(vec![1, 7], 5);
    e.submit(b).unwrap();
    e.cancel_all();
    assert_eq!(drain(&mut rx_a).1, Event::Stopping);
    assert_eq!(rx_b.blocking_recv(), Some(Event::Stopping));
    assert_eq!(e.submit(job(vec![1], 1).0).unwrap_err(), Refused::Stopped);
    e.join();
}
