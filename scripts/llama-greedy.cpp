// Greedy token ids from llama.cpp for a GGUF file: the prompt's ids (BOS and special tokens as llama.cpp
// adds and parses them), then N generated ids, space-separated on one line; EOS does not stop it.
// Built and run by scripts/llama-tokenize-fixture.mjs against llama.cpp's static libraries.
#include "llama.h"
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

int main(int argc, char ** argv) {
    if (argc != 4) {
        fprintf(stderr, "usage: %s MODEL.gguf N PROMPT\n", argv[0]);
        return 2;
    }
    const int n = atoi(argv[2]);
    const std::string prompt = argv[3];
    llama_log_set([](ggml_log_level, const char *, void *) {}, nullptr);
    ggml_backend_load_all();
    llama_model_params mp = llama_model_default_params();
    mp.n_gpu_layers = 0;
    llama_model * model = llama_model_load_from_file(argv[1], mp);
    if (!model) {
        fprintf(stderr, "cannot load %s\n", argv[1]);
        return 1;
    }
    const llama_vocab * vocab = llama_model_get_vocab(model);
    const int np = -llama_tokenize(vocab, prompt.c_str(), prompt.size(), nullptr, 0, true, true);
    std::vector<llama_token> tokens(np);
    if (llama_tokenize(vocab, prompt.c_str(), prompt.size(), tokens.data(), np, true, true) < 0) {
        fprintf(stderr, "cannot tokenize the prompt\n");
        return 1;
    }
    llama_context_params cp = llama_context_default_params();
    cp.n_ctx = np + n;
    cp.n_batch = np;
    cp.n_threads = 1;
    cp.n_threads_batch = 1;
    cp.no_perf = true;
    llama_context * ctx = llama_init_from_model(model, cp);
    llama_sampler * smpl = llama_sampler_chain_init(llama_sampler_chain_default_params());
    llama_sampler_chain_add(smpl, llama_sampler_init_greedy());
    for (llama_token t : tokens) printf("%d ", t);
    llama_batch batch = llama_batch_get_one(tokens.data(), tokens.size());
    llama_token next;
    for (int i = 0; i < n; i++) {
        if (llama_decode(ctx, batch) != 0) {
            fprintf(stderr, "decode failed\n");
            return 1;
        }
        next = llama_sampler_sample(smpl, ctx, -1);
        printf("%d ", next);
        batch = llama_batch_get_one(&next, 1);
    }
    printf("\n");
    llama_sampler_free(smpl);
    llama_free(ctx);
    llama_model_free(model);
    return 0;
}
