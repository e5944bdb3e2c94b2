"""rnnfused.models: the gated-candidate cell against a pure-PyTorch transcription of Liu et al.'s
equations (outputs and every gradient, float64), lengths / PackedSequence handling, attention
masks, generation, bad input, and end-to-end training of every model on tiny synthetic data."""
import pytest
import torch
import torch.nn.functional as F
from torch.nn.utils.rnn import pack_padded_sequence

from rnnfused import models

V, E, H, B, T = 20, 6, 5, 4, 6
LENGTHS = torch.tensor([6, 2, 4, 1])


# --- the gated-candidate cell against the paper's equations --------------------------------------

def paper_reference(module, x, h0, c0, context=None):
    """Liu et al. 2016 eqs. 10-11 (and 15-16 with a context), one stream and one step at a time,
    with the weight matrices named as in the paper. x (T, B, I), context (T, B, C), h0 / c0
    (M, B, H) -> output (T, B, M, H), h_n (M, B, H), c_n (M, B, H)."""
    M, Hs, I = module.num_streams, module.hidden_size, module.input_size
    W, b = module.weight_ih.view(M, 5, Hs, I), module.bias.view(M, 5, Hs)  # W_i, W_f, W_o, W_c, W_g
    U = module.weight_hh

    def U_own(m, k):  # U_i, U_f, U_o of stream m
        return U[m, k * Hs:(k + 1) * Hs]

    def U_g(s, m):
        return U[s, (3 + m) * Hs:(4 + m) * Hs]

    def U_c(s, m):
        return U[s, (3 + M + m) * Hs:(4 + M + m) * Hs]

    h, c, outputs = list(h0), list(c0), []
    for t in range(x.shape[0]):
        new_h, new_c = [], []
        for m in range(M):
            def lin(k):
                return x[t] @ W[m, k].T + b[m, k]

            i, f, o = (torch.sigmoid(lin(k) + h[m] @ U_own(m, k).T) for k in range(3))
            candidate = lin(3)
            for s in range(M):
                candidate = candidate + torch.sigmoid(lin(4) + h[s] @ U_g(s, m).T) * (h[s] @ U_c(s, m).T)
            if context is not None:
                V_g, V_c = module.weight_ch.view(M, 2, Hs, -1)[m]
                candidate = candidate + torch.sigmoid(lin(4) + context[t] @ V_g.T) * (context[t] @ V_c.T)
            new_c.append(f * c[m] + i * torch.tanh(candidate))
            new_h.append(o * torch.tanh(new_c[-1]))
        h, c = new_h, new_c
        outputs.append(torch.stack(h, dim=1))
    return torch.stack(outputs), torch.stack(h), torch.stack(c)


def _grads(outputs, inputs):
    gen = torch.Generator().manual_seed(7)
    loss = sum((o * torch.randn(o.shape, generator=gen, dtype=o.dtype)).sum() for o in outputs)
    return torch.autograd.grad(loss, inputs)


@pytest.mark.parametrize("streams,context_size", [(2, 0), (3, 0), (1, 4)], ids=["coupled2", "coupled3", "shared"])
def test_gated_candidate_cell_matches_the_paper_equations(streams, context_size):
    module = models.GatedCandidateLSTM(E, H, num_streams=streams, context_size=context_size).double()
    x = torch.randn(T, B, E, dtype=torch.float64, requires_grad=True)
    h0, c0 = (torch.randn(streams, B, H, dtype=torch.float64, requires_grad=True) for _ in range(2))
    context = torch.randn(T, B, context_size, dtype=torch.float64, requires_grad=True) if context_size else None
    leaves = [x, h0, c0, *([context] if context_size else []), *module.parameters()]

    out, (h_n, c_n) = module(x, (h0, c0), context=context)
    expected = paper_reference(module, x, h0, c0, context)
    for a, b in zip((out, h_n, c_n), expected):
        torch.testing.assert_close(a, b, atol=1e-12, rtol=1e-10)
    for i, (a, b) in enumerate(zip(_grads((out, h_n, c_n), leaves), _grads(expected, leaves))):
        torch.testing.assert_close(a, b, atol=1e-11, rtol=1e-9, msg=lambda m: f"gradient {i}: {m}")


@pytest.mark.parametrize("context_size", [0, 3])
def test_gated_candidate_packed_equals_each_sequence_alone(context_size):
    """Packed (unsorted lengths, batch_first) == every sequence run alone on its own length."""
    module = models.GatedCandidateLSTM(E, H, num_streams=2 if not context_size else 1,
                                       context_size=context_size, batch_first=True).double()
    x = torch.randn(B, T, E, dtype=torch.float64)
    ctx = torch.randn(B, T, context_size, dtype=torch.float64) if context_size else None

    def pack(t):
        return pack_padded_sequence(t, LENGTHS, batch_first=True, enforce_sorted=False)

    out, (h_n, c_n) = module(pack(x), context=pack(ctx) if context_size else None)
    for b, length in enumerate(LENGTHS.tolist()):
        alone, (h_alone, c_alone) = module(x[b:b + 1, :length], context=ctx[b:b + 1, :length] if context_size else None)
        torch.testing.assert_close(h_n[:, b], h_alone[:, 0])
        torch.testing.assert_close(c_n[:, b], c_alone[:, 0])
    padded = torch.nn.utils.rnn.pad_packed_sequence(out, batch_first=True)[0]
    torch.testing.assert_close(padded[0], module(x[:1], context=ctx[:1] if context_size else None)[0][0])


def test_gated_candidate_bad_input():
    module = models.GatedCandidateLSTM(E, H, num_streams=2)
    with pytest.raises(ValueError, match="input must be 3-D with 6 features"):
        module(torch.randn(T, B, E + 1))
    with pytest.raises(ValueError, match="context is required exactly when context_size > 0"):
        module(torch.randn(T, B, E), context=torch.randn(T, B, 3))
    with pytest.raises(ValueError, match=r"h0 must have shape \(2, 4, 5\)"):
        module(torch.randn(T, B, E), (torch.zeros(B, 2, H), torch.zeros(B, 2, H)))
    shared = models.GatedCandidateLSTM(E, H, context_size=3, batch_first=True)
    x = pack_padded_sequence(torch.randn(B, T, E), LENGTHS, batch_first=True, enforce_sorted=False)
    other = pack_padded_sequence(torch.randn(B, T, 3), torch.tensor([6, 3, 4, 1]), batch_first=True,
                                 enforce_sorted=False)
    with pytest.raises(ValueError, match="packed from the same lengths"):
        shared(x, context=other)
    with pytest.raises(ValueError, match="num_streams must be an int >= 1"):
        models.GatedCandidateLSTM(E, H, num_streams=0)


# --- lengths, packing, attention, generation ---------------------------------------------------

def tokens():
    return torch.randint(1, V, (B, T))


@pytest.mark.parametrize("make", [
    lambda: models.SequenceClassifier(V, E, H, 3),
    lambda: models.SequenceClassifier(V, E, H, 3, bidirectional=True, pooling="final", num_layers=2),
    lambda: models.SequenceClassifier(V, E, H, 3, rnn="rnn_relu", pooling="final"),
    lambda: models.AttentionDocumentClassifier(V, E, H, 3),
    lambda: models.UniformLayerMTL(V, E, H, [3, 2]),
    lambda: models.CoupledLayerMTL(V, E, H, [3, 2]),
    lambda: models.SharedLayerMTL(V, E, H, [3, 2], shared_hidden_size=4),
], ids=["last", "final_bidir", "rnn_relu", "attention", "uniform", "coupled", "shared"])
def test_lengths_and_packed_input_equal_each_sequence_alone(make):
    """Padding never leaks into a result: lengths, a PackedSequence of ids and each sequence
    alone all give the same logits."""
    model = make().double().eval()
    ids = tokens()
    with_lengths = model(ids, LENGTHS)
    packed = model(pack_padded_sequence(ids, LENGTHS, batch_first=True, enforce_sorted=False))
    torch.testing.assert_close(packed, with_lengths)
    for b, length in enumerate(LENGTHS.tolist()):
        torch.testing.assert_close(model(ids[b:b + 1, :length])[0], with_lengths[b])


def test_tagger_per_step_logits_ignore_padding():
    model = models.SequenceTagger(V, E, H, 4).double()
    ids = tokens()
    logits = model(ids, LENGTHS)
    assert logits.shape == (B, T, 4)
    alone = model(ids[1:2, :2])
    torch.testing.assert_close(logits[1, :2], alone[0])


def test_attention_weights_are_a_distribution_over_real_tokens():
    model = models.AttentionDocumentClassifier(V, E, H, 2).double()
    ids = tokens()
    logits, alpha = model(ids, LENGTHS, return_attention=True)
    assert alpha.shape == (B, T)
    torch.testing.assert_close(alpha.sum(1), torch.ones(B, dtype=torch.float64))
    assert bool((alpha[1, 2:] == 0).all()) and bool((alpha[3, 1:] == 0).all())
    changed = ids.clone()
    changed[1, 2:] = 1  # padding contents do not matter
    torch.testing.assert_close(model(changed, LENGTHS), logits)


def test_word_attention_pooling_formula_and_mask_errors():
    pool = models.WordAttentionPooling(3, 4).double()
    h = torch.randn(2, 5, 3, dtype=torch.float64)
    mask = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]], dtype=torch.bool)
    s, alpha = pool(h, mask)
    scores = torch.tanh(h @ pool.proj.weight.T + pool.proj.bias) @ pool.context
    expected = torch.softmax(scores[0, :3], 0)
    torch.testing.assert_close(alpha[0, :3], expected)
    torch.testing.assert_close(s[0], (expected.unsqueeze(1) * h[0, :3]).sum(0))
    with pytest.raises(ValueError, match="at least one unmasked position"):
        pool(h, torch.zeros(2, 5, dtype=torch.bool))
    with pytest.raises(ValueError, match="mask must be a bool tensor of shape"):
        pool(h, mask.long())


def test_hierarchical_classifier_skips_padding_sentences():
    model = models.HierarchicalAttentionClassifier(V, E, H, 4, 3).double()
    docs = torch.randint(1, V, (2, 3, 4))
    sentence_lengths = torch.tensor([[4, 2, 0], [1, 3, 4]])
    logits, (word_alpha, sentence_alpha) = model(docs, sentence_lengths, return_attention=True)
    alone = model(docs[:1, :2], sentence_lengths[:1, :2])
    torch.testing.assert_close(logits[0], alone[0])
    assert bool((word_alpha[0, 2] == 0).all()) and float(sentence_alpha[0, 2]) == 0
    torch.testing.assert_close(word_alpha[0, 1].sum(), torch.tensor(1.0, dtype=torch.float64))
    with pytest.raises(ValueError, match="real sentences must come first"):
        model(docs, torch.tensor([[0, 2, 1], [1, 3, 4]]))


def test_language_model_generation():
    model = models.LanguageModel(V, 8, 8, num_layers=2, tie_weights=True).train()
    prefix = tokens()[:, :3]
    greedy = model.generate(prefix, 5, greedy=True)
    assert greedy.shape == (B, 8) and torch.equal(greedy[:, :3], prefix)
    assert torch.equal(model.generate(prefix, 5, greedy=True), greedy)
    assert model.training, "generate restores the module's mode"
    # step-by-step generation with carried state == one pass over the generated text
    logits, _ = model.eval()(greedy[:, :-1])
    assert torch.equal(logits[:, 2:].argmax(-1), greedy[:, 3:])
    sample = lambda: model.generate(prefix[0], 6, temperature=0.7, generator=torch.Generator().manual_seed(3))  # noqa: E731
    assert torch.equal(sample(), sample()) and sample().shape == (9,)
    with pytest.raises(ValueError, match="temperature must be > 0"):
        model.generate(prefix, 2, temperature=0.0)
    with pytest.raises(ValueError, match="tie_weights needs embed_dim == hidden_size"):
        models.LanguageModel(V, 8, 6, tie_weights=True)


def test_bad_model_input_is_a_clear_error():
    model = models.CoupledLayerMTL(V, E, H, [2, 2])
    with pytest.raises(ValueError, match=r"task must be an int in \[0, 2\)"):
        model(tokens(), task=2)
    with pytest.raises(ValueError, match=r"lengths must lie in \[1, 6\]"):
        model(tokens(), torch.tensor([7, 1, 1, 1]))
    with pytest.raises(ValueError, match=r"lengths must have shape \(4,\)"):
        model(tokens(), torch.tensor([1, 1]))
    with pytest.raises(TypeError, match="integer token ids"):
        model(torch.rand(B, T))
    with pytest.raises(ValueError, match=r"tokens must be a \(B, T\) tensor"):
        model(torch.randint(1, V, (T,)))
    with pytest.raises(ValueError, match="pooling must be 'last' or 'final'"):
        models.SequenceClassifier(V, E, H, 2, pooling="mean")
    with pytest.raises(ValueError, match="rnn must be 'lstm', 'rnn_tanh' or 'rnn_relu'"):
        models.SequenceClassifier(V, E, H, 2, rnn="gru")


# --- every model learns ------------------------------------------------------------------------

def _decreases(model, batches, loss_fn, steps=25):
    """Adam on the batches in turn; the mean loss of the last 5 steps is well below the first 5."""
    torch.manual_seed(0)
    optimizer = torch.optim.Adam(model.parameters(), lr=0.03)
    losses = []
    for step in range(steps):
        optimizer.zero_grad()
        loss = loss_fn(model, batches[step % len(batches)])
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    first, last = sum(losses[:5]) / 5, sum(losses[-5:]) / 5
    assert last < 0.7 * first, f"loss {first:.3f} -> {last:.3f}: {losses}"


def _classification_batch(task_classes=2, n=16):
    """Label: whether token 1 occurs more often than token 2 (or modulo for more classes)."""
    ids = torch.randint(1, 4, (n, T))
    lengths = torch.randint(2, T + 1, (n,))
    mask = torch.arange(T) < lengths.unsqueeze(1)
    label = (((ids == 1) & mask).sum(1) - ((ids == 2) & mask).sum(1)).clamp(min=0) % task_classes
    return ids, lengths, label


@pytest.mark.parametrize("make", [
    lambda: models.SequenceClassifier(V, 8, 12, 2),
    lambda: models.SequenceClassifier(V, 8, 12, 2, bidirectional=True, pooling="final", rnn="rnn_tanh"),
    lambda: models.AttentionDocumentClassifier(V, 8, 12, 2),
], ids=["classifier", "bidir_rnn", "attention"])
def test_classifiers_train(make):
    batch = _classification_batch()
    _decreases(make(), [batch], lambda m, b: F.cross_entropy(m(b[0], b[1]), b[2]))


@pytest.mark.parametrize("cls", [models.UniformLayerMTL, models.CoupledLayerMTL, models.SharedLayerMTL])
def test_multitask_models_train_on_both_tasks(cls):
    """Batches alternate between the tasks (Liu et al.'s joint training); both losses fall."""
    model = cls(V, 8, 12, [2, 3])
    batches = [(0, *_classification_batch(2)), (1, *_classification_batch(3))]
    losses = {0: [], 1: []}

    def loss_fn(m, b):
        task, ids, lengths, label = b
        loss = F.cross_entropy(m(ids, lengths, task=task), label)
        losses[task].append(loss.item())
        return loss

    _decreases(model, batches, loss_fn, steps=30)
    for task, values in losses.items():
        assert values[-1] < values[0], f"task {task}: {values}"


def test_tagger_trains():
    ids = torch.randint(1, V, (16, T))
    lengths = torch.randint(1, T + 1, (16,))
    tags = torch.where(torch.arange(T) < lengths.unsqueeze(1), ids % 3, -100)
    _decreases(models.SequenceTagger(V, 8, 12, 3), [(ids, lengths, tags)],
               lambda m, b: F.cross_entropy(m(b[0], b[1]).transpose(1, 2), b[2], ignore_index=-100))


def test_language_model_trains():
    text = torch.arange(1, 9).repeat(16, 2)[:, :T + 1] % V  # a repeating pattern to learn
    _decreases(models.LanguageModel(V, 8, 16), [text],
               lambda m, b: F.cross_entropy(m(b[:, :-1])[0].transpose(1, 2), b[:, 1:]))


def test_hierarchical_classifier_trains():
    docs = torch.randint(1, 4, (8, 3, 4))
    sentence_lengths = torch.tensor([[4, 3, 0], [2, 4, 4], [1, 0, 0], [4, 4, 4]] * 2)
    label = (docs[:, 0, 0] == 1).long()
    _decreases(models.HierarchicalAttentionClassifier(V, 8, 8, 8, 2), [(docs, sentence_lengths, label)],
               lambda m, b: F.cross_entropy(m(b[0], b[1]), b[2]))
