/* generate.c: the bitnetc C API end to end: open a model or .bnx artifact, make a greedy session,
 * tokenize a prompt, generate with the text streamed through a callback, check that the logits of
 * a prefill agree with the first generated token, detokenize, and free everything.
 *
 * Usage: generate MODEL [PROMPT] [MAX_TOKENS]
 * Prints the streamed text, then a line "tokens: ID ID ..." with the new token ids.
 * Built and run (under AddressSanitizer) by examples/c/run.sh. */

#include "bitnetc.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int fail(const char *what) {
  fprintf(stderr, "error: %s: %s\n", what, bitnetc_last_error());
  return 1;
}

/* The streaming callback: prints each piece of text as it comes; returns 0 to go on (non-zero
 * would stop the generation). */
static int32_t on_token(void *user_data, int64_t token, const char *text, size_t text_len) {
  size_t *count = user_data;
  if (token >= 0) {
    *count += 1;
  }
  fwrite(text, 1, text_len, stdout);
  fflush(stdout);
  return 0;
}

int main(int argc, char **argv) {
  if (argc < 2) {
    fprintf(stderr, "usage: %s MODEL [PROMPT] [MAX_TOKENS]\n", argv[0]);
    return 2;
  }
  const char *path = argv[1];
  const char *prompt = argc > 2 ? argv[2] : "Return a new sorted list from the items in iterable.";
  size_t max_tokens = argc > 3 ? (size_t)strtoul(argv[3], NULL, 10) : 16;

  /* Errors are statuses with a message: a missing file, a NULL argument. */
  BitnetcModel *missing = NULL;
  if (bitnetc_model_open("no/such/model.bnx", NULL, &missing) != BITNETC_STATUS_LOAD || missing) {
    fprintf(stderr, "error: opening a missing file did not fail\n");
    return 1;
  }
  fprintf(stderr, "(expected) %s\n", bitnetc_last_error());
  if (bitnetc_session_new(NULL, NULL, NULL) != BITNETC_STATUS_NULL_ARGUMENT) {
    fprintf(stderr, "error: a NULL argument was not refused\n");
    return 1;
  }
  fprintf(stderr, "(expected) %s\n", bitnetc_last_error());

  BitnetcModelOptions model_options = bitnetc_model_options_default();
  model_options.threads = 2;
  BitnetcModel *model = NULL;
  if (bitnetc_model_open(path, &model_options, &model) != BITNETC_STATUS_OK) {
    return fail(path);
  }
  fprintf(stderr, "bitnetc %s: %s: vocab %llu, context %llu\n", bitnetc_version(), path,
          (unsigned long long)bitnetc_model_vocab(model),
          (unsigned long long)bitnetc_model_context(model));

  BitnetcSessionOptions session_options = bitnetc_session_options_default(); /* greedy */
  BitnetcSession *session = NULL;
  if (bitnetc_session_new(model, &session_options, &session) != BITNETC_STATUS_OK) {
    bitnetc_model_free(model);
    return fail("bitnetc_session_new");
  }
  bitnetc_model_free(model); /* the session does not borrow the model */

  /* Tokenize: ask for the length, then fill a buffer of that size. */
  size_t n_prompt = 0;
  BitnetcStatus status = bitnetc_tokenize(session, prompt, NULL, 0, &n_prompt);
  if (status != BITNETC_STATUS_BUFFER_TOO_SMALL && status != BITNETC_STATUS_OK) {
    bitnetc_session_free(session);
    return fail("bitnetc_tokenize");
  }
  uint32_t *ids = calloc(n_prompt + 1, sizeof *ids);
  uint32_t *out = calloc(max_tokens + 1, sizeof *out);
  int rc = 1;
  if (!ids || !out) {
    fprintf(stderr, "error: out of memory\n");
    goto done;
  }
  if (bitnetc_tokenize(session, prompt, ids, n_prompt, &n_prompt) != BITNETC_STATUS_OK) {
    rc = fail("bitnetc_tokenize");
    goto done;
  }

  size_t streamed = 0, n_out = 0;
  BitnetcStop stop = BITNETC_STOP_MAX_TOKENS;
  fputs(prompt, stdout);
  if (bitnetc_generate(session, ids, n_prompt, max_tokens, on_token, &streamed, out, max_tokens,
                       &n_out, &stop) != BITNETC_STATUS_OK) {
    rc = fail("bitnetc_generate");
    goto done;
  }
  printf("\ntokens:");
  for (size_t i = 0; i < n_out; i++) {
    printf(" %u", out[i]);
  }
  printf("\n");
  if (streamed != n_out) {
    fprintf(stderr, "error: %zu tokens streamed but %zu returned\n", streamed, n_out);
    goto done;
  }

  /* Detokenize what was generated: a string the caller frees. */
  char *text = NULL;
  if (bitnetc_detokenize(session, out, n_out, &text) != BITNETC_STATUS_OK) {
    rc = fail("bitnetc_detokenize");
    goto done;
  }
  fprintf(stderr, "detokenized: %s (stopped: %d)\n", text, (int)stop);
  bitnetc_string_free(text);

  /* Logits: a new conversation, the prompt as one prefill; the argmax of its last row is the
   * first greedy token. The logits belong to the session until its next call. */
  const float *logits = NULL;
  size_t n_logits = 0;
  size_t vocab = (size_t)bitnetc_session_vocab(session);
  if (bitnetc_session_reset(session) != BITNETC_STATUS_OK ||
      bitnetc_forward(session, ids, n_prompt, &logits, &n_logits) != BITNETC_STATUS_OK) {
    rc = fail("bitnetc_forward");
    goto done;
  }
  if (n_logits != n_prompt * vocab || n_out == 0) {
    fprintf(stderr, "error: %zu logits for %zu tokens of vocab %zu\n", n_logits, n_prompt, vocab);
    goto done;
  }
  const float *last = logits + (n_prompt - 1) * vocab;
  size_t best = 0;
  for (size_t v = 1; v < vocab; v++) {
    if (last[v] > last[best]) {
      best = v;
    }
  }
  fprintf(stderr, "argmax after the prompt: %zu (first generated token %u)\n", best, out[0]);
  rc = best == out[0] ? 0 : 1;

done:
  free(ids);
  free(out);
  bitnetc_session_free(session);
  return rc;
}
