"""
microgpt: a complete GPT in one file of plain Python, no packages needed.

    python microgpt.py            # train on names.txt, then print 20 new names
    python microgpt.py --help     # every option

A GPT is a function that, given the tokens so far, returns a probability for every possible
next token. Training nudges its parameters so that the token that really came next gets a
higher probability. Sampling draws a token from those probabilities, appends it, and repeats.
Here is the whole algorithm, with the numbers of the sections that explain each line. It
prints what `python microgpt.py` prints (a test checks that), without the decoration:

    config, rng = Config(), random.Random(42)
    docs = split_documents(read_text("names.txt"))       # 1. the examples: one name per line
    chars = build_vocab("".join(docs))                    # 2. one token per letter, plus BOS
    train_docs, val_docs = train_val_split(docs, rng)     # 1. hold out 1,000 names to test on
    params = init_params(config, len(chars) + 1, rng)     # 4. 4,192 random numbers
    batches = document_batches(train_docs, chars, config.batch)    # 6. one name per step
    for loss in train(params, config, batches, config.steps):      # 5, 3, 6. gpt(), backward(),
        print(f"loss {loss:.4f}")                         #    Adam; it yields each step's loss
    weights = inference_weights(params)                   # 7. the weights, for use without training
    val_loss = mean_token_loss([encode_document(d, chars) for d in val_docs], weights, config)
    print(f"validation loss: {val_loss:.4f}")             # 6. the loss on the held-out names
    sample_rng = random.Random(config.seed + 1)           # 7. sampling has its own random stream
    for _ in range(config.num_samples):
        print(sample_document(weights, config, chars, sample_rng, config.temperature))

The file has four parts:

    Part I    The algorithm       1 Dataset, 2 Tokenizer, 3 Autograd, 4 Parameters,
                                  5 Model, 6 Training, 7 Sampling
    Part II   Making it fast      the same numbers, about 25 times sooner on CPython
    Part III  Looking inside      text as one stream, the GPT seen as a Markov chain, and a
                                  per-position view of its predictions and its attention
    Part IV   The plumbing        checkpoints, files, errors and the command line

Part I is the lesson: every piece of the algorithm, each written once and plainly. A reader
who stops at its end has seen all of it. Part II is the second lesson: how the same math is
made fast, as real frameworks do it, without changing a single number.
"""

import contextlib
import gc
import itertools
import math
import sys
from dataclasses import dataclass
from operator import mul


@dataclass      # writes Config's __init__ for us, taking each field below as an argument
class Config:
    """Every hyperparameter in one place. The command line, a checkpoint (a saved model, Part
    IV) and the code all read their defaults from here. You will meet each of them in Part I.

    With these defaults and the 27 tokens of names.txt, the model has 4,192 parameters (the
    matrices are named in section 4): wte 27 x 16 + wpe 16 x 16 + lm_head 27 x 16 = 1,120 for
    the embeddings and the output, and per layer 4 x 16 x 16 = 1,024 for attention plus
    2 x 64 x 16 = 2,048 for the MLP."""
    # the shape of the model (a checkpoint stores exactly these four)
    n_layer: int = 1        # how many transformer blocks are stacked
    n_embd: int = 16        # the width of every vector inside the model
    n_head: int = 4         # attention heads per block; each looks at n_embd // n_head numbers
    block_size: int = 16    # the longest context the model can see, in tokens
    # training
    steps: int = 1000
    lr: float = 0.01        # Adam's learning rate, decayed linearly to 0 over the run
    beta1: float = 0.85     # how slowly Adam's average of the gradient forgets (section 6)
    beta2: float = 0.99     # the same for its average of the squared gradient
    eps: float = 1e-8       # keeps Adam from dividing by zero
    init_std: float = 0.08  # the spread of the random initial weights
    batch: int = 1          # documents (or windows of text, Part III) per step
    seed: int = 42
    # sampling
    temperature: float = 0.5
    num_samples: int = 20
    length: int = 200       # characters to generate in continuous-text mode

# Part II's faster versions of Part I's functions: True uses them, False runs Part I alone
# (same numbers to rounding, about 25 times slower; `python microgpt.py --plain` does that,
# and so lets a debugger step through the code of Part I).
FAST = True


# =======================================================================================
# PART I. THE ALGORITHM
#
# Seven sections, in the order a GPT needs them. Every operation on numbers that need a
# gradient is one node of a graph: one per +, *, **, exp, log and relu, as in Andrej
# Karpathy's original 200-line microgpt, from which this file grew. Where Part II has a
# faster version of a function, the function's first line hands over to it
# (`if FAST: return fast_...`); read past that line for the math.
# =======================================================================================

# ---------------------------------------------------------------------------------------
# 1. Dataset
#
# A language model learns from examples of text. Here each example ("document") is one
# line of a text file: by default one first name per line, 29,910 of them. We shuffle them
# with the seed, so runs are reproducible, and hold some back: the validation set (about
# 10%, but at most 1,000: so 1,000 of the names, about 3%). The model never trains on
# those, so its loss on them tells us whether it learned the patterns of names in general
# or merely memorised the ones it saw.
# ---------------------------------------------------------------------------------------

def read_text(path):
    """The whole content of a UTF-8 text file. (Part IV's read_data_file adds the checks a
    user's file needs: missing, not UTF-8, empty, too large.)"""
    with open(path, encoding="utf-8") as f:
        return f.read()


def split_documents(text):
    """The non-empty lines of a text, without surrounding whitespace."""
    return [line.strip() for line in text.split("\n") if line.strip()]


def train_val_split(docs, rng):
    """Shuffle, then hold out about 10% (at most 1000) for validation. With fewer than 10
    documents there is nothing to spare and the validation set is empty."""
    docs = list(docs)
    rng.shuffle(docs)
    n_val = min(1000, len(docs) // 10)
    return docs[n_val:], docs[:n_val]


# ---------------------------------------------------------------------------------------
# 2. Tokenizer
#
# A neural network computes with numbers, not letters. The simplest tokenizer gives every
# distinct character an integer id (its place in the sorted list of characters), and adds
# one special token, BOS ("beginning of sequence"), whose id is len(chars). BOS marks where
# a document starts and, when the model predicts it, where it ends: "emma" is trained as
# [BOS, e, m, m, a, BOS]. At the start it gives the model something to predict the first
# letter from; at the end it is the target that teaches the model when a name stops. One
# token can do both jobs, since a name ends exactly where the next one would begin. Real
# GPTs use tokens of several characters, but the idea is the same.
# ---------------------------------------------------------------------------------------

def build_vocab(text):
    """The sorted list of distinct characters; token id i stands for chars[i]."""
    return sorted(set(text))


def encode(text, chars):
    """Characters to token ids."""
    stoi = {ch: i for i, ch in enumerate(chars)}
    return [stoi[ch] for ch in text]


def decode(ids, chars):
    """Token ids back to text (BOS, which has no character, is left out)."""
    return "".join(chars[i] for i in ids if i < len(chars))


def encode_document(doc, chars):
    """A document as the model sees it: [BOS] + its characters + [BOS]."""
    bos = len(chars)
    return [bos] + encode(doc, chars) + [bos]


# ---------------------------------------------------------------------------------------
# 3. Autograd
#
# Training means nudging every parameter in the direction that lowers the loss, so we need
# the derivative of the loss with respect to each parameter. A Value holds one number and
# remembers the Values it was computed from (its children: draw the graph as a tree with the
# loss at the top and the parameters at the bottom) together with the local derivative of
# itself with respect to each child. backward() then applies the chain rule
# from the loss back to the parameters: each node passes its gradient to its children,
# multiplied by the local derivative, and a child used several times adds up what it gets.
# ---------------------------------------------------------------------------------------

class Value:
    """One number in the computation graph, with its gradient."""
    # __slots__: no per-object dict, so the many Values of a graph take less memory and time.
    __slots__ = ("data", "grad", "_children", "_local_grads")
    tape = None   # for Part II ("The tape"), skip on a first reading: while this is a list,

    def __init__(self, data, children=(), local_grads=()):
        self.data = data                  # the number itself
        self.grad = 0.0                   # d(loss)/d(this number), filled in by backward()
        self._children = children         # the Values this one was computed from
        self._local_grads = local_grads   # d(this)/d(child), one per child
        if Value.tape is not None:        # ... each new Value is added to it
            Value.tape.append(self)

    # Each operation computes its result and, right beside it, its local derivatives.
    # A plain number on the other side is a constant: it needs no gradient, so it gets no
    # node of its own and simply appears in the local derivative.
    def __add__(self, other):
        if isinstance(other, Value):      # d(a+b)/da = 1, d(a+b)/db = 1
            return Value(self.data + other.data, (self, other), (1.0, 1.0))
        return Value(self.data + other, (self,), (1.0,))

    def __mul__(self, other):
        if isinstance(other, Value):      # d(a*b)/da = b, d(a*b)/db = a
            return Value(self.data * other.data, (self, other), (other.data, self.data))
        return Value(self.data * other, (self,), (other,))

    def __pow__(self, k):                 # d(a**k)/da = k * a**(k-1), k a constant
        return Value(self.data ** k, (self,), (k * self.data ** (k - 1),))

    def exp(self):                        # d(e**a)/da = e**a
        e = math.exp(self.data)
        return Value(e, (self,), (e,))

    def log(self):                        # d(ln a)/da = 1/a
        return Value(math.log(self.data), (self,), (1.0 / self.data,))

    def relu(self):                       # d(max(0,a))/da = 1 if a > 0 else 0
        return Value(max(0.0, self.data), (self,), (float(self.data > 0),))

    # The rest are built from the operations above.
    def __neg__(self):
        return self * -1.0

    def __sub__(self, other):
        return self + (-other)

    def __truediv__(self, other):
        return self * other ** -1

    def __radd__(self, other):            # other + self, where other is a plain number
        return self + other

    def __rsub__(self, other):
        return (-self) + other

    def __rmul__(self, other):
        return self * other

    def __rtruediv__(self, other):
        return self ** -1 * other

    # float(v) is v's number. Evaluation and sampling read numbers with float(), so that they
    # work both on Values and on the plain floats that Part II gives them (float(x) is x).
    def __float__(self):
        return self.data

    def backward(self):
        """Add to .grad of every Value this one depends on d(self)/d(that Value). Gradients
        add up over calls, so that a batch of documents can pass through one at a time;
        Adam sets them back to 0 after each step (section 6)."""
        # A node may pass its gradient on only once it holds all of it, that is, once every
        # node that uses it has passed on its share. Visiting in the wrong order gives wrong
        # gradients: with u = 2 * x, v = 3 * u and L = u + v, dL/du = 1 + 3 = 4 and so
        # dL/dx = 8; but if u passed on its gradient right after L, it would hand x only
        # 2 * 1 (from L), and the 3 that v sends u afterwards would never reach x.
        # So we visit the nodes in reverse topological order: every node before its children.
        # (A topological order lists every node after all of the nodes it was computed from.)
        self.grad = 1.0
        for node in reversed(self.topological_order()):
            for child, local in zip(node._children, node._local_grads):
                child.grad += local * node.grad   # the chain rule; a child used twice adds both

    def topological_order(self):
        """This node and every node it depends on that has children, each after its children."""
        # The idea, as the original microgpt writes it, recursively:
        #     def build(node):
        #         if node not in visited:
        #             visited.add(node)
        #             for child in node._children: build(child)
        #             order.append(node)        # after all of its children
        # Python limits recursion to about 1,000 calls deep, and a bigger model's graph is
        # deeper than that, so we do the same with a stack of our own. Each node is pushed
        # twice: the first time it is popped, its children are pushed above it; the second
        # time (children_placed), they are all in the order already, so it can follow them.
        # Leaves (the parameters) are left out: they have nothing to pass on.
        order, visited, stack = [], set(), [(self, False)]
        while stack:
            node, children_placed = stack.pop()
            if children_placed:
                order.append(node)
            elif node not in visited:
                visited.add(node)
                stack.append((node, True))
                for child in node._children:
                    if child._children and child not in visited:
                        stack.append((child, False))
        return order


# ---------------------------------------------------------------------------------------
# 4. Parameters
#
# The model's knowledge lives in lists of lists of Values (matrices), kept in a dict under
# the names used in the GPT-2 literature. A matrix is a list of rows: one row per output,
# one column per input, as linear() in section 5 expects. They start as small random numbers
# (a Gaussian with standard deviation config.init_std, 0.08): random so that different
# rows learn different things, small so that the first predictions are close to uniform.
# ---------------------------------------------------------------------------------------

def param_shapes(config, vocab_size):
    """Name -> (rows, columns) of every weight matrix. There are no biases."""
    e = config.n_embd
    shapes = {
        "wte": (vocab_size, e),                 # token embedding: one vector per token
        "wpe": (config.block_size, e),          # position embedding: one vector per position
        "lm_head": (vocab_size, e),             # turns the final vector into one score per token
    }
    for i in range(config.n_layer):
        shapes[f"layer{i}.attn_wq"] = (e, e)    # query, key, value and output projections
        shapes[f"layer{i}.attn_wk"] = (e, e)
        shapes[f"layer{i}.attn_wv"] = (e, e)
        shapes[f"layer{i}.attn_wo"] = (e, e)
        # The MLP widens to 4 * n_embd and comes back: a convention of the original
        # Transformer and GPT-2, not a law. The wide middle gives each position room to
        # compute many features at once; it holds most of the parameters.
        shapes[f"layer{i}.mlp_fc1"] = (4 * e, e)
        shapes[f"layer{i}.mlp_fc2"] = (e, 4 * e)
    return shapes


def init_params(config, vocab_size, rng):
    """Fresh random parameters: name -> [rows][cols] of Values."""
    return {name: [[Value(rng.gauss(0.0, config.init_std)) for _ in range(cols)] for _ in range(rows)]
            for name, (rows, cols) in param_shapes(config, vocab_size).items()}


def flatten(params):
    """All parameters in one list, in a fixed order: what the optimizer walks over."""
    return [p for matrix in params.values() for row in matrix for p in row]


# ---------------------------------------------------------------------------------------
# 5. Model
#
# The GPT reads one token at a time. For each position it turns the token into a vector,
# lets that vector gather information from the earlier positions (attention), thinks about
# it on its own (the MLP), and finally scores every possible next token (the logits).
# First the building blocks, each one equation; then gpt(), which puts them together.
#
# gpt() is called once per position, with that position's token; what it needs from the
# earlier positions travels in the key/value cache. Training on "emma" makes five calls:
#     position  0    1    2    3    4
#     reads     BOS  e    m    m    a        (the cache then holds this and every earlier one)
#     predicts  e    m    m    a    BOS      (the target: the next token of the document)
#
# This is GPT-2's design, simplified as in the original microgpt: RMSNorm without a learned
# gain instead of LayerNorm, ReLU instead of GELU, no biases, a norm right after the
# embeddings and none before lm_head, and lm_head separate from wte.
# ---------------------------------------------------------------------------------------

def linear(x, w):
    """Matrix times vector: y[i] = sum_j w[i][j] * x[j].   x: [n_in], w: [n_out][n_in] -> [n_out]"""
    if FAST: return fast_linear(x, w)
    return [sum(wi * xi for wi, xi in zip(row, x)) for row in w]


def softmax(logits):
    """Scores -> probabilities: p[i] = exp(l[i]) / sum_j exp(l[j]).   [n] -> [n]"""
    if FAST: return fast_softmax(logits)
    # Subtracting the largest score changes nothing (it cancels in the ratio) but keeps exp
    # from overflowing.
    m = max(l.data for l in logits)
    exps = [(l - m).exp() for l in logits]
    total = sum(exps)
    return [e / total for e in exps]


def rmsnorm(x):
    """Rescale x to a root-mean-square of 1: x / sqrt(mean(x**2) + 1e-5).   [n] -> [n]
    Keeps the numbers in a healthy range however many layers they pass through."""
    if FAST: return fast_rmsnorm(x)
    scale = (sum(xi * xi for xi in x) / len(x) + 1e-5) ** -0.5
    return [xi * scale for xi in x]


def mlp(x, w1, w2):
    """The MLP block: widen, ReLU, narrow.   [n_embd] -> [4 * n_embd] -> [n_embd]
    ReLU (max(0, y)) is the non-linearity that lets it compute more than weighted sums."""
    if FAST: return fast_mlp(x, w1, w2)
    hidden = [h.relu() for h in linear(x, w1)]
    return linear(hidden, w2)


def attention_weights(q, ks):
    """How much the current position attends to each position so far:
    softmax over t of q . k[t] / sqrt(head_dim).   q: [head_dim], ks: [t][head_dim] -> [t]"""
    # Why divide by sqrt(head_dim): if q and k hold d numbers of about unit size and random
    # signs (as they do at the start), q . k is a sum of d such products that partly cancel,
    # so it grows like sqrt(d). Dividing brings it back to unit size whatever the head size,
    # so the softmax does not start out as a hard one-hot choice.
    scale = 1.0 / math.sqrt(len(q))
    return softmax([sum(qi * ki for qi, ki in zip(q, k)) * scale for k in ks])


def attention_head(q, ks, vs):
    """One attention head at the current position: the average of the values v[t] weighted
    by the attention weights.   q: [head_dim], ks, vs: [t][head_dim] -> [head_dim]
    ks and vs hold only this position and the earlier ones, so attention is causal: the
    model cannot peek at tokens it is supposed to predict."""
    if FAST: return fast_attention_head(q, ks, vs)
    p = attention_weights(q, ks)
    return [sum(pt * v[j] for pt, v in zip(p, vs)) for j in range(len(q))]


def gpt(token, pos, keys, values, params, config, attention_log=None):
    """The logits (a score for every possible next token) after reading `token` at position
    `pos`.   -> [vocab_size]
    keys and values are the key/value cache: keys[layer] is a list with one k vector for each
    earlier position (values likewise). This call appends its own, so the next position can
    attend to this one, and nothing is computed twice. attention_log, if given (for looking
    inside, Part III), collects each head's attention weights, computed again for it."""
    hd = config.n_embd // config.n_head                 # the head size, head_dim
    # The token says what, the position says where; the sum carries both.
    x = [t + p for t, p in zip(params["wte"][token], params["wpe"][pos])]   # [n_embd]
    x = rmsnorm(x)            # start every position from a vector of the same size (in layer
                              # 0 the block's own rmsnorm below then changes almost nothing)
    for i in range(config.n_layer):
        # Attention block: gather information from earlier positions.
        residual = x
        x = rmsnorm(x)
        q = linear(x, params[f"layer{i}.attn_wq"])      # [n_embd]: what this position looks for
        k = linear(x, params[f"layer{i}.attn_wk"])      # [n_embd]: what it offers to others
        v = linear(x, params[f"layer{i}.attn_wv"])      # [n_embd]: what it passes on
        keys[i].append(k)
        values[i].append(v)
        # Several small heads rather than one big one, so that each can look for something
        # different (say, the previous letter, or the start of the name).
        heads = []
        for h in range(config.n_head):                  # each head uses its own slice
            sl = slice(h * hd, (h + 1) * hd)
            q_h = q[sl]                                 # [head_dim]
            ks = [k_t[sl] for k_t in keys[i]]           # [pos+1][head_dim]
            vs = [v_t[sl] for v_t in values[i]]         # [pos+1][head_dim]
            heads.extend(attention_head(q_h, ks, vs))   # extend: the heads' outputs side by side
            if attention_log is not None:
                attention_log.append(attention_weights(q_h, ks))
        x = linear(heads, params[f"layer{i}.attn_wo"])  # [n_embd]
        # The residual connection adds the block's output to its input, so each block only
        # has to learn a correction, and gradients flow straight back through the sum.
        x = [a + b for a, b in zip(x, residual)]
        # MLP block: think about what was gathered, one position at a time.
        residual = x
        x = rmsnorm(x)
        x = mlp(x, params[f"layer{i}.mlp_fc1"], params[f"layer{i}.mlp_fc2"])   # [n_embd]
        x = [a + b for a, b in zip(x, residual)]
    return linear(x, params["lm_head"])                 # [vocab_size]


# ---------------------------------------------------------------------------------------
# 6. Training
#
# The loss measures how surprised the model is by the real next token: the cross-entropy
# -log p(next token). A model that guesses uniformly among the 27 tokens of names.txt (26
# letters and BOS) has loss ln(27) = 3.30; one that always gives the right token probability
# 1 has loss 0. Each step takes one document (or a batch), computes its mean loss over its
# positions, gets every parameter's gradient with backward(), and lets Adam move each
# parameter a little downhill.
#
# One document's loss is noisy: some names are easy to predict, some hard, and a short one
# has few predictions to average over. So the loss jumps from step to step, and the
# command line prints its mean over the last 100 steps ("smoothed") beside it.
# ---------------------------------------------------------------------------------------

def cross_entropy(logits, target):
    """-log softmax(logits)[target], the loss of one prediction.   [vocab_size] -> scalar"""
    if FAST: return fast_cross_entropy(logits, target)
    return -softmax(logits)[target].log()


def mean(xs):
    """The average of a list of losses."""
    if FAST: return fast_mean(xs)
    return sum(xs) / len(xs)


def sequence_losses(tokens, params, config):
    """The loss of predicting each of tokens[1:] from the tokens before it. The model sees at
    most block_size tokens, so a longer sequence is cut to its first block_size predictions.
    With block_size 16, names of up to 15 letters are trained in full; a 16-letter name
    loses its closing BOS, and a longer one its last letters too: the model never learns
    where such a name stops."""
    keys, values = [[] for _ in range(config.n_layer)], [[] for _ in range(config.n_layer)]
    n = min(config.block_size, len(tokens) - 1)
    return [cross_entropy(gpt(tokens[pos], pos, keys, values, params, config), tokens[pos + 1])
            for pos in range(n)]


def document_loss(tokens, params, config):
    """The training loss of one document: its mean loss per prediction."""
    return mean(sequence_losses(tokens, params, config))


def add_gradient(tokens, params, config, weight=1.0):
    """Forward and backward through one document: adds weight * d(its loss)/d(p) to the .grad
    of every parameter p, and returns its loss."""
    if FAST: return fast_add_gradient(tokens, params, config, weight)
    loss = document_loss(tokens, params, config)
    (loss * weight).backward()
    return loss.data


def document_batches(docs, chars, batch):
    """batch_for_step for documents: the training documents in order, `batch` at a time
    ("all": every one of them at every step); after the last one, it starts again from the
    first, in the same order. The default 1000 steps of one name each see only 1,000 of the
    28,910 training names: the model learns what names have in common from a small sample,
    not the list by heart. (`lambda step: ...` makes a small function on the spot.)"""
    seqs = [encode_document(doc, chars) for doc in docs]
    if batch == "all":
        return lambda step: seqs
    return lambda step: [seqs[(step * batch + b) % len(seqs)] for b in range(batch)]


def adam_update(flat_params, m, v, step, num_steps, config):
    """One step of Adam on every parameter, then reset the gradients for the next step.
    m and v are running averages of each gradient and of its square. The step follows the
    average direction m, divided by sqrt(v), the gradient's typical size: so every
    parameter moves by about lr, whatever the scale of its own gradient, and less where its
    gradient keeps changing sign."""
    lr = config.lr * (1 - step / num_steps)          # decays linearly (lr / num_steps at the end)
    b1, b2 = config.beta1, config.beta2
    # m and v start at 0, so early on they are too small. After t steps of a constant
    # gradient g, m = (1 - b1) * (1 + b1 + ... + b1**(t-1)) * g = (1 - b1**t) * g: the
    # weights of the average add up to 1 - b1**t, not 1. Dividing by that gives exactly g.
    bias1 = 1 - b1 ** (step + 1)
    bias2 = 1 - b2 ** (step + 1)
    c1, c2, eps = 1 - b1, 1 - b2, config.eps         # looked up once, not once per parameter
    for i, p in enumerate(flat_params):
        g = p.grad
        m[i] = b1 * m[i] + c1 * g
        v[i] = b2 * v[i] + c2 * g * g
        p.data -= lr * (m[i] / bias1) / ((v[i] / bias2) ** 0.5 + eps)
        p.grad = 0.0


def train(params, config, batch_for_step, num_steps):
    """Train for num_steps steps of Adam (a fresh optimizer), yielding each step's loss (the
    batch's mean of its documents' losses, measured before that step's update) as it goes.
    batch_for_step(step) gives the token sequences to learn from at that step. This is a
    generator (it says yield, not return): nothing runs until the caller loops over it, as
    in `for loss in train(...)`, and each turn of that loop runs one step."""
    flat = flatten(params)
    m, v = [0.0] * len(flat), [0.0] * len(flat)    # Adam's running averages, one per parameter
    for step in range(num_steps):
        batch = batch_for_step(step)
        loss = 0.0
        # The gradient of the batch's mean loss is the mean of the documents' gradients, so
        # each document adds its share to p.grad in turn, and its graph is freed before the
        # next one is built: memory holds one document's graph, whatever the batch size.
        for tokens in batch:
            loss += add_gradient(tokens, params, config, 1 / len(batch))
        adam_update(flat, m, v, step, num_steps, config)
        yield loss / len(batch)


def mean_token_loss(sequences, weights, config):
    """Mean cross-entropy per predicted token over some sequences: the validation loss.
    It is not the same kind of number as the smoothed training loss the command line prints
    beside it: that one is a mean per document (a short name's tokens weigh more), over 100
    steps during which the weights kept changing, on the documents trained on. This one is
    per token, so that every held-out character counts the same, with the final weights."""
    losses = [float(loss) for tokens in sequences for loss in sequence_losses(tokens, weights, config)]
    return sum(losses) / len(losses)


# ---------------------------------------------------------------------------------------
# 7. Sampling
#
# To write a new name, feed BOS, turn the logits into probabilities, draw a token, feed it
# back in, and repeat until the model draws BOS (the end of the name) or the context is full.
# The temperature divides the logits first: below 1 it sharpens the distribution (safer,
# more typical names), above 1 it flattens it (more surprising ones). As it approaches 0,
# all the probability goes to the likeliest token and sampling becomes always taking it
# (0 itself is refused: it would divide by zero). A name the model never ends stops when
# the context is full, at block_size characters.
# ---------------------------------------------------------------------------------------

def inference_weights(params):
    """The weights to run the model with when no gradient is needed (evaluation, sampling).
    Part I keeps the Values (each run builds a graph that is never used); Part II passes
    plain floats, which build none. The functions below take either, and float() reads the
    number out of both."""
    if FAST: return weights_of(params)
    return params


def sample_token(logits, temperature, rng):
    """Draw a token id with probabilities softmax(logits / temperature)."""
    # Subtract the largest logit before dividing by the temperature: that changes no
    # probability, and keeps a tiny temperature from blowing the logits up to infinity.
    m = max(float(l) for l in logits)
    probs = softmax([(l - m) / temperature for l in logits])
    return rng.choices(range(len(probs)), weights=[float(p) for p in probs])[0]


def sample_document(weights, config, chars, rng, temperature, prompt=""):
    """One new document, starting with `prompt`. weights: from inference_weights()."""
    bos = len(chars)
    tokens = [bos] + encode(prompt, chars)
    keys, values = [[] for _ in range(config.n_layer)], [[] for _ in range(config.n_layer)]
    for pos in range(config.block_size):
        logits = gpt(tokens[pos], pos, keys, values, weights, config)
        if pos < len(tokens) - 1:
            continue      # the prompt's next token is given: this step only fills the cache
        token = sample_token(logits, temperature, rng)
        if token == bos:
            break
        tokens.append(token)
    return decode(tokens[1:], chars)


# That is the whole algorithm: the summary at the top of the file puts these pieces
# together. Everything below is efficiency (Part II), ways to look inside (Part III), and
# plumbing (Part IV).


# =======================================================================================
# PART II. MAKING IT FAST
#
# Part I is the algorithm, and everything else is just efficiency. This part makes the same
# computation cheaper without changing what it computes: each function here replaces one of
# Part I's, and the tests check each against its Part I version (to 1e-9) and against
# central finite differences. Four ideas:
#
#   1. Fused nodes: one graph node for a whole sum, softmax or loss, with its derivative
#      worked out by hand, instead of one node per + and *.
#   2. The tape: backward() walks a list of the nodes recorded as they were made, instead
#      of searching the graph for an order.
#   3. The collector switch: CPython's cycle collector is paused during training.
#   4. Plain floats: when no gradient is needed (validation, sampling), no graph at all.
#
# Their sections are numbered II.1 to II.4, apart from Part I's 1 to 7.
#
# What they buy, measured by `python scripts/bench.py` (it alternates the variants, 50
# steps at a time, over the first 200 steps of the default run, on a shared 2-core
# machine; README.md has all the figures): a training step takes 25 times less time with
# all four (FAST = True) than with Part I alone on CPython 3.11, 5.7 ms against 141 ms,
# and 12 times less on PyPy 3.9, 1.9 ms against 23 ms.
# =======================================================================================

# ---------------------------------------------------------------------------------------
# II.1 Fused nodes
#
# A Value may have any number of children. Part I computes one output of a linear layer,
# sum_i w[i] * x[i] over 16 inputs, with 32 nodes (16 products, 16 sums); but one node
# whose 32 children are the w[i] and x[i], with local derivatives x[i] and w[i] computed in
# the forward pass, gives backward() exactly the same gradients with far less work. The
# same holds for any function whose derivative we can write down: we do the forward pass
# on plain floats and record only the result and its local derivatives.
#
# Every fast_ function below also accepts plain floats and then builds no graph at all
# (idea 4): that is how evaluation and sampling run without Values.
#
# The first training step of the default run (the name "evania", 7 predictions) builds
# 54,342 nodes with 105,665 edges (child links) in Part I, and 1,879 nodes with 37,172
# edges with fused nodes. The benchmark also runs Part I's graph with the tape and the
# collector switch of II.2 and II.3: the fused graph makes a step 10 times faster than
# that on CPython, 6 times on PyPy.
#
# sum(map(mul, a, b)) below is sum(x * y for x, y in zip(a, b)), but faster: map calls
# operator.mul on the pairs without a Python loop.
#
# The proof that nothing changes: tests/test_autograd.py (TestFusedNodes) checks every
# fast_ function against its Part I graph, values and gradients to 1e-9, and against
# central finite differences; tests/test_model.py checks the whole model's gradient, and a
# few training steps with FAST on and off (losses, gradients and weights to 1e-9).
# ---------------------------------------------------------------------------------------

def is_graph(vector):
    """True for a list of Values (build a graph), False for a list of plain floats."""
    return isinstance(vector[0], Value)


def dot(a, b, scale=1.0):
    """One node for scale * sum_i a[i] * b[i], where a and b are lists of Values.
    d/d a[i] = scale * b[i]   and   d/d b[i] = scale * a[i]."""
    ad = [v.data for v in a]
    bd = [v.data for v in b]
    # a + b and the second argument join lists: the children, then their local derivatives.
    return Value(sum(map(mul, ad, bd)) * scale, a + b,
                 [x * scale for x in bd] + [x * scale for x in ad])


def fast_linear(x, w):
    """linear() with one dot-product node per output instead of 2 * n_in nodes."""
    if not is_graph(x):
        return [sum(map(mul, row, x)) for row in w]
    # dot(row, x) for every row, written out so that x's numbers are read once for all rows.
    # row + x joins the two lists: the node's children, then xd + rd their local derivatives.
    xd = [xi.data for xi in x]
    out = []
    for row in w:
        rd = [wi.data for wi in row]
        out.append(Value(sum(map(mul, rd, xd)), row + x, xd + rd))
    return out


def fast_softmax(logits):
    """softmax() with one node per output instead of five per input.
    With S = sum_j exp(l[j]) and p[i] = exp(l[i]) / S, the quotient rule gives
        d p[i] / d l[j] = (exp(l[i]) * [i == j] * S - exp(l[i]) * exp(l[j])) / S**2
                        = p[i] * ([i == j] - p[j])."""
    ld = [l.data for l in logits] if is_graph(logits) else logits
    m = max(ld)
    exps = [math.exp(l - m) for l in ld]
    total = sum(exps)
    probs = [e / total for e in exps]
    if not is_graph(logits):
        return probs
    return [Value(pi, logits, [pi * ((i == j) - pj) for j, pj in enumerate(probs)])
            for i, pi in enumerate(probs)]


def fast_rmsnorm(x):
    """rmsnorm() with one node for the scale instead of 2n + 3.
    The scale is s = (m + 1e-5) ** -0.5 with m = sum_i x[i]**2 / n, so by the chain rule
        d s / d x[i] = -0.5 * (m + 1e-5) ** -1.5 * (2 * x[i] / n) = -s**3 * x[i] / n."""
    if not is_graph(x):
        scale = (sum(xi * xi for xi in x) / len(x) + 1e-5) ** -0.5
        return [xi * scale for xi in x]
    xd = [xi.data for xi in x]
    s = (sum(map(mul, xd, xd)) / len(x) + 1e-5) ** -0.5
    scale = Value(s, x, [-s ** 3 * xi / len(x) for xi in xd])
    return [xi * scale for xi in x]


def fast_mlp(x, w1, w2):
    """mlp() with one node per hidden unit for its sum and its ReLU together, and none at
    all for a unit the ReLU switches off.
    Where a unit is on, ReLU's slope is 1, so the node's local derivatives are those of
    linear(). Where it is off (its sum is not positive) it outputs 0 and ReLU's slope is 0:
    it adds nothing to the second layer's sums, no gradient reaches its inputs through it,
    and w2's weights for it would get gradient (their local derivative, the unit's output)
    times 0. So it gets no node, the second layer skips it, and no number changes. About
    half of the 64 units are off at the start of the default run and most later (17% on
    over steps 500 to 999): leaving them out makes a training step 20% to 35% shorter on
    CPython and 27% to 61% on PyPy."""
    if not is_graph(x):
        hidden = [h if h > 0 else 0.0 for h in fast_linear(x, w1)]
        return fast_linear(hidden, w2)
    xd = [xi.data for xi in x]
    on, hidden = [], []
    for j, row in enumerate(w1):
        rd = [wi.data for wi in row]
        y = sum(map(mul, rd, xd))
        if y > 0:
            on.append(j)
            hidden.append(Value(y, row + x, xd + rd))
    if not hidden:                        # every unit is off: the block adds nothing
        return [Value(0.0) for _ in w2]
    # w2's columns for the units that are on: the same Values, not copies, so their
    # gradients land on the real weights.
    return fast_linear(hidden, [[row[j] for j in on] for row in w2])


def fast_attention_head(q, ks, vs):
    """attention_head() with one node per score and one per output, instead of
    2 * head_dim + 6 per position for the weights and 2 per position per output for the
    weighted sum.
    The scores are s[t] = q . k[t] / sqrt(d), each one dot() node. Each output,
    out[j] = sum_t p[t] * v[t][j] with p = softmax(s), is one node whose children are the
    scores and the v[t][j]. Its local derivatives: d out[j] / d v[t][j] = p[t], and with
    fast_softmax's d p[u] / d s[t] = p[u] * ([u == t] - p[t]),
        d out[j] / d s[t] = sum_u v[u][j] * p[u] * ([u == t] - p[t])
                          = p[t] * v[t][j] - p[t] * sum_u p[u] * v[u][j]
                          = p[t] * (v[t][j] - out[j])."""
    if not is_graph(q):
        p = attention_weights(q, ks)
        return [sum(pt * v[j] for pt, v in zip(p, vs)) for j in range(len(q))]
    scores = [dot(q, k, 1.0 / math.sqrt(len(q))) for k in ks]
    p = fast_softmax([s.data for s in scores])           # plain floats: no nodes
    out = []
    for j in range(len(q)):
        v_j = [v[j] for v in vs]
        vd = [v.data for v in v_j]
        o = sum(map(mul, p, vd))
        out.append(Value(o, scores + v_j, [pt * (vt - o) for pt, vt in zip(p, vd)] + p))
    return out


def fast_cross_entropy(logits, target):
    """cross_entropy() as one node instead of softmax's nodes plus a log.
    -log(exp(l[t]) / S) = log(S) - l[t], computed as log(sum_j exp(l[j] - m)) + m - l[t]
    with m the largest logit: the same number, but it cannot take the log of a probability
    that underflowed to 0. Its derivative: d log(S) / d l[i] = exp(l[i]) / S = p[i], so
        d loss / d l[i] = p[i] - [i == t]:
    the predicted probabilities minus the one-hot target."""
    ld = [l.data for l in logits] if is_graph(logits) else logits
    m = max(ld)
    loss = math.log(sum(math.exp(l - m) for l in ld)) + m - ld[target]
    if not is_graph(logits):
        return loss
    grads = fast_softmax(ld)
    grads[target] -= 1.0
    return Value(loss, logits, grads)


def fast_mean(xs):
    """mean() as one node instead of n + 1. d mean / d x[i] = 1/n."""
    if not is_graph(xs):
        return sum(xs) / len(xs)
    return Value(sum(x.data for x in xs) / len(xs), xs, [1.0 / len(xs)] * len(xs))


# ---------------------------------------------------------------------------------------
# II.2 The tape
#
# backward() needs the nodes in topological order, and Part I finds one by searching the
# graph: a set of visited nodes and a stack, for every node. But a node is always made
# after its children (it is computed from them), so the order in which the forward pass
# creates the nodes is already a topological order. While Value.tape is a list, every new
# Value appends itself to it (see Value.__init__); backward then walks that list in reverse.
# Without the tape a step takes 1% to 38% longer on CPython (median 14%, 8 runs) and 33%
# to 84% longer on PyPy. Tested in tests/test_fast.py (TestTape): the tape lists every node
# after its children, and backward along it gives backward()'s gradients.
# ---------------------------------------------------------------------------------------

def fast_add_gradient(tokens, params, config, weight):
    """add_gradient(), recording the forward pass on a tape for backward."""
    Value.tape = []
    try:
        loss = document_loss(tokens, params, config)
        share = loss * weight
    finally:
        tape, Value.tape = Value.tape, None
    backward_along(share, tape)
    return loss.data


def backward_along(root, tape):
    """Value.backward(), with the tape (every node of root's graph, in the order they were
    made) as the topological order: the same loop, with no search."""
    root.grad = 1.0
    for node in reversed(tape):
        g = node.grad                        # complete now: every node using this one came later
        for child, local in zip(node._children, node._local_grads):
            child.grad += local * g


# ---------------------------------------------------------------------------------------
# II.3 The collector switch
#
# The graph has no reference cycles (a node points only at its children), so CPython frees
# each document's graph by reference counting alone, as soon as the last reference to it
# goes. Its cycle collector would only spend time scanning the thousands of new nodes, so
# the command line (main(), Part IV) pauses it for the whole run. That changes no number,
# so it does so with FAST = False too, where the graphs are 29 times bigger and gain even
# more: Part I's validation took 32 ms per name with the collector paused and 94 to 162
# ms with it on. With FAST, whole 500-step runs took 18% and 20% longer with it on.
# PyPy has no reference counting and needs its collector to free the graphs: when we tried
# switching it off there, a default run took 5.9 s instead of 3.8 s and peaked at 1.1 GiB
# of memory instead of 96 MiB. tests/test_fast.py (TestCollectorSwitch) checks that the
# collector is paused only inside the block and always comes back.
# ---------------------------------------------------------------------------------------

@contextlib.contextmanager       # makes this generator usable as `with cycle_collector_paused():`
def cycle_collector_paused():
    """Pause CPython's cycle collector for a block of code. The code before yield runs on
    entering the block, the code after it on leaving, even by an error."""
    pause = sys.implementation.name == "cpython" and gc.isenabled()
    if pause:
        gc.disable()
    try:
        yield
    finally:
        if pause:
            gc.enable()


# ---------------------------------------------------------------------------------------
# II.4 Plain floats
#
# Validation and sampling need no gradient, so they need no graph. inference_weights()
# (section 7) hands them the weights as plain floats, and every fast_ function above, given
# floats, does the same arithmetic with no Value at all (Part I's code around them, like the
# residual sums in gpt(), works on floats as it is). A forward pass is 5 to 11 times faster
# on CPython and 5 to 9 times on PyPy; the validation loss over 1,000 names takes about 2 s
# instead of 15.
# ---------------------------------------------------------------------------------------

def weights_of(params):
    """The same matrices holding plain floats."""
    return {name: [[p.data for p in row] for row in matrix] for name, matrix in params.items()}


# =======================================================================================
# PART III. LOOKING INSIDE
#
# Three ways to watch the model at work.
#
# Continuous text ("stream" mode). Instead of separate lines, the whole file is one stream
# of characters, newlines included, with no BOS token: each step learns from a random window
# of block_size + 1 characters, as in the classic demos that learn to write Shakespeare
# (Karpathy's char-rnn and nanoGPT). Sampling slides the
# window along, so the model always sees the last block_size characters and nothing older.
#
# The Markov chain. Because of that window, the next token depends only on the last
# block_size tokens: the model is a Markov chain whose states are the possible windows. For
# a tiny vocabulary and context we can list every state, its next-token probabilities, and
# the state each token leads to.
#
# The microscope. For one input: what the model predicts at every position, and where each
# attention head looks.
#
# All of them run the model without a gradient, on weights from inference_weights().
# =======================================================================================

# Continuous text

def stream_split(tokens, block_size):
    """Hold out the last ~10% of a token stream for validation, if that is at least one
    window (block_size + 1 tokens) long; otherwise train on all of it."""
    n_val = len(tokens) // 10
    if n_val < block_size + 1:
        return tokens, []
    return tokens[:-n_val], tokens[-n_val:]


def window_batches(tokens, block_size, batch, rng):
    """batch_for_step for a stream: `batch` random windows of block_size + 1 tokens ("all":
    every window, in order). Windows lie wholly inside `tokens`."""
    starts = range(len(tokens) - block_size)
    if batch == "all":
        windows = [tokens[s:s + block_size + 1] for s in starts]
        return lambda step: windows
    def batch_for_step(step):
        chosen = [rng.choice(starts) for _ in range(batch)]
        return [tokens[s:s + block_size + 1] for s in chosen]
    return batch_for_step


def stream_val_windows(tokens, block_size):
    """Consecutive windows over a held-out stream, so every token is predicted once."""
    return [tokens[s:s + block_size + 1] for s in range(0, len(tokens) - 1, block_size)
            if len(tokens[s:s + block_size + 1]) > 1]


def logits_at_every_position(tokens, weights, config, attention_log=None):
    """Run the model over a sequence of at most block_size tokens: [len(tokens)][vocab_size]."""
    keys = [[] for _ in range(config.n_layer)]
    values = [[] for _ in range(config.n_layer)]
    return [gpt(t, pos, keys, values, weights, config, attention_log) for pos, t in enumerate(tokens)]


def sample_stream(weights, config, rng, temperature, start_tokens, length):
    """Continue a stream of tokens by `length` tokens. Once the text is longer than the
    context, the model sees only the last block_size tokens (a sliding window)."""
    # Why the whole window is run again for every new token, instead of reusing the key/value
    # cache as sample_document does: once the window slides, every token in it sits one
    # position earlier, so its position embedding, and with it every cached key and value,
    # changes. (From the second layer on, the keys and values also depend on the token that
    # just fell out of the window.)
    tokens = list(start_tokens)
    for _ in range(length):
        logits = logits_at_every_position(tokens[-config.block_size:], weights, config)[-1]
        tokens.append(sample_token(logits, temperature, rng))
    return tokens


# The Markov chain and the microscope

def markov_chain(weights, config, vocab_size):
    """Every full context (a tuple of block_size token ids) with its next-token
    probabilities: [(state, probs)]. Reading token t in state s leads to s[1:] + (t,)."""
    chain = []
    for state in itertools.product(range(vocab_size), repeat=config.block_size):
        logits = logits_at_every_position(list(state), weights, config)[-1]
        chain.append((state, [float(p) for p in softmax(logits)]))
    return chain


def explain(tokens, weights, config):
    """For each position of a sequence: the next-token probabilities, and each head's
    attention weights over the positions so far (layer by layer, head by head)."""
    log = []
    logits = logits_at_every_position(tokens, weights, config, log)
    # gpt() appends one list of weights per head, layer by layer, at every position in
    # turn, so each position's share of the log is the next n_layer * n_head entries.
    heads = config.n_layer * config.n_head
    rows = []
    for pos, l in enumerate(logits):
        attention = log[pos * heads:(pos + 1) * heads]
        rows.append(([float(p) for p in softmax(l)], [[float(w) for w in head] for head in attention]))
    return rows


def sparkline(values, width=60, ascii_only=False):
    """A row of characters whose heights follow the values (averaged down to `width`)."""
    levels = "_.-:=+*#" if ascii_only else "\u2581\u2582\u2583\u2584\u2585\u2586\u2587\u2588"
    n = len(values)
    width = min(width, n)
    buckets = [values[i * n // width:(i + 1) * n // width] for i in range(width)]
    means = [sum(b) / len(b) for b in buckets]
    lo, hi = min(means), max(means)
    span = (hi - lo) or 1.0
    return "".join(levels[round((x - lo) / span * (len(levels) - 1))] for x in means)


# =======================================================================================
# PART IV. THE PLUMBING
#
# What turns the algorithm into a program people can rely on: files read and written
# safely, checkpoints, every user mistake turned into one clear line, and the command
# line. A learner can skip it. (Its imports are here too, so that the top of the file
# imports only what the algorithm uses.)
# =======================================================================================

import argparse
import json
import os
import random
import signal
import site
import tempfile
import time

MODEL_SHAPE = ("n_layer", "n_embd", "n_head", "block_size")   # what a checkpoint's "config" holds

class BadInput(Exception):
    """Something the user can fix: a missing file, an impossible setting. The command line
    turns it into a one-line message and exit code 2."""


def read_data_file(path):
    """read_text() with the checks a user's file needs: the whole content of a UTF-8 text
    file, or BadInput saying why it cannot be had."""
    try:
        text = read_text(path)
    except FileNotFoundError:
        raise BadInput(f"data file not found: {path}") from None
    except UnicodeDecodeError as e:
        raise BadInput(f"{path} is not UTF-8 text (byte 0x{e.object[e.start]:02x} at offset {e.start})") from None
    except OSError as e:
        raise BadInput(f"cannot read {path}: {e.strerror or e}") from None
    text = text.lstrip("\ufeff")   # some editors start UTF-8 files with an invisible mark
    if not text.strip():
        raise BadInput(f"data file is empty: {path}")
    return text


def encode_for(what, text, chars):
    """encode(), or BadInput naming `what` was being encoded and every character that is
    not in the vocabulary."""
    unknown = sorted(set(text) - set(chars))
    if unknown:
        raise BadInput(f"{what}: characters the model has never seen: " + " ".join(repr(ch) for ch in unknown))
    return encode(text, chars)


def check_finite_scores(weights, config):
    """Refuse a model whose scores are not finite numbers (its weights are so large that the
    arithmetic overflows), before it is asked to sample or explain anything."""
    try:
        rows = logits_at_every_position([0] * config.block_size, weights, config)
        finite = all(math.isfinite(float(l)) for row in rows for l in row)
    except (OverflowError, ValueError):
        finite = False
    if not finite:
        raise BadInput("the model's scores are not finite numbers: its weights are too large to compute with")



# ---------------------------------------------------------------------------------------
# Checkpoints
#
# A trained model is its configuration, its vocabulary and its weights, saved as one JSON
# object (readable anywhere, and unlike pickle, loading it cannot run code). Loading checks
# every part, so a damaged or mismatched file is refused with a clear message.
# ---------------------------------------------------------------------------------------

def write_atomically(path, text):
    """Write to a temporary file beside `path`, then rename it over `path`: the rename is
    atomic, so an interrupted write never leaves half a file or destroys the old one."""
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=".microgpt-", suffix=".tmp", dir=directory)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)     # mkstemp makes the file private; use the usual mode
        os.replace(tmp, path)
    except BaseException:
        try:
            os.remove(tmp)
        except OSError:
            pass
        raise


def save_checkpoint(path, params, config, chars, mode, extra=None):
    """Save the model as JSON. mode is "docs" or "stream" (stream models have no BOS)."""
    checkpoint = {
        "format": "microgpt",
        "version": 1,
        "config": {key: getattr(config, key) for key in MODEL_SHAPE},
        "chars": chars,
        "mode": mode,
        "state_dict": weights_of(params),
    }
    checkpoint.update(extra or {})
    try:
        write_atomically(path, json.dumps(checkpoint) + "\n")
    except OSError as e:
        raise BadInput(f"cannot save to {path}: {e.strerror or e}") from None


def is_finite_number(x):
    """True for an int or float that a float can hold (JSON numbers may be huge, or NaN)."""
    try:
        return type(x) in (int, float) and math.isfinite(x)
    except OverflowError:                          # an integer too large for a float
        return False


def load_checkpoint(path):
    """Read and check a checkpoint. Returns (config, chars, params, mode, checkpoint)."""
    try:
        with open(path, encoding="utf-8") as f:
            ckpt = json.load(f)
    except FileNotFoundError:
        raise BadInput(f"checkpoint not found: {path}") from None
    except (ValueError, RecursionError):          # not UTF-8, or not JSON
        raise BadInput(f"{path} is not a JSON checkpoint") from None
    except OSError as e:
        raise BadInput(f"cannot read {path}: {e.strerror or e}") from None

    def bad(why):
        return BadInput(f"{path}: {why}")
    if not isinstance(ckpt, dict) or ckpt.get("format") != "microgpt":
        raise bad('not a microgpt checkpoint (no "format": "microgpt")')
    if ckpt.get("version") != 1:
        raise bad(f"checkpoint version {ckpt.get('version')!r} is not supported (expected 1)")
    for key in ("config", "chars", "state_dict"):
        if key not in ckpt:
            raise bad(f'missing "{key}"')
    cfg = ckpt["config"]
    if not isinstance(cfg, dict):
        raise bad('"config" is not an object')
    for key in MODEL_SHAPE:
        value = cfg.get(key)
        if type(value) is not int or value < 1:
            raise bad(f'config "{key}" must be a positive integer, not {value!r}')
    config = Config(**{key: cfg[key] for key in MODEL_SHAPE})
    if config.n_embd % config.n_head:
        raise bad(f"n_embd {config.n_embd} is not divisible by n_head {config.n_head}")
    chars = ckpt["chars"]
    if (not isinstance(chars, list) or not chars
            or not all(isinstance(c, str) and len(c) == 1 for c in chars) or len(set(chars)) != len(chars)):
        raise bad('"chars" must be a list of distinct single characters')
    mode = ckpt.get("mode", "docs")
    if mode not in ("docs", "stream"):
        raise bad(f'unknown mode {mode!r}')
    if "stream_start" in ckpt and ckpt["stream_start"] not in chars:
        raise bad('"stream_start" must be one of the characters in "chars"')
    vocab_size = len(chars) + (1 if mode == "docs" else 0)
    state = ckpt["state_dict"]
    shapes = param_shapes(config, vocab_size)
    if not isinstance(state, dict) or set(state) != set(shapes):
        names = set(state) if isinstance(state, dict) else set()
        missing, extra = sorted(set(shapes) - names), sorted(names - set(shapes))
        raise bad(f"state_dict does not match the config (missing: {missing or 'none'}; unexpected: {extra or 'none'})")
    params = {}
    for name, (rows, cols) in shapes.items():
        matrix = state[name]
        if (not isinstance(matrix, list) or len(matrix) != rows
                or not all(isinstance(row, list) and len(row) == cols for row in matrix)):
            raise bad(f"{name} should be [{rows}][{cols}]")
        if not all(is_finite_number(x) for row in matrix for x in row):
            raise bad(f"{name} holds something that is not a finite number")
        params[name] = [[Value(float(x)) for x in row] for row in matrix]
    return config, chars, params, mode, ckpt


# ---------------------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------------------

def default_data_path():
    """names.txt beside this file, or where `pip install .` (or `pip install --user .`) put it."""
    here = os.path.join(os.path.dirname(os.path.abspath(__file__)), "names.txt")
    for prefix in (sys.prefix, site.getuserbase()):
        installed = os.path.join(prefix, "share", "microgpt", "names.txt")
        if not os.path.exists(here) and os.path.exists(installed):
            return installed
    return here


class ArgumentParser(argparse.ArgumentParser):
    def error(self, message):                    # one line, like every other error
        raise BadInput(f"{message} (see --help)")


def batch_arg(text):
    if text == "all":
        return text
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a whole number or 'all', not {text!r}") from None


def make_parser():
    d = Config()
    p = ArgumentParser(prog="microgpt", description="Train a tiny GPT on a text file and sample from it. "
                       "Without options: learn from names.txt for 1000 steps and print 20 new names.")
    p.add_argument("--input", metavar="FILE", help="UTF-8 text file: one document per line (default: names.txt "
                   "beside microgpt.py), or one stream of text with --stream")
    p.add_argument("--stream", action="store_true", help="treat the input as one continuous text (newlines are "
                   "ordinary characters, no BOS) and train on random windows of block_size + 1 characters")
    p.add_argument("--steps", type=int, metavar="N", help=f"training steps (default {d.steps}; "
                   "with --load the default is 0: only sample)")
    p.add_argument("--n-layer", type=int, metavar="N", help=f"transformer blocks (default {d.n_layer})")
    p.add_argument("--n-embd", type=int, metavar="N", help=f"embedding width (default {d.n_embd})")
    p.add_argument("--n-head", type=int, metavar="N", help=f"attention heads, must divide n-embd (default {d.n_head})")
    p.add_argument("--block-size", type=int, metavar="N", help=f"context length in tokens (default {d.block_size})")
    p.add_argument("--batch", type=batch_arg, metavar="N|all", help="documents or windows per "
                   f"step; 'all' uses every one at every step (default {d.batch})")
    p.add_argument("--lr", type=float, metavar="F", help=f"Adam learning rate, decayed linearly "
                   f"to 0 (default {d.lr})")
    p.add_argument("--seed", type=int, default=d.seed, metavar="N", help=f"random seed; the same seed and "
                   f"options give the same output (default {d.seed})")
    p.add_argument("--temperature", type=float, default=d.temperature, metavar="F",
                   help=f"sampling temperature: lower is safer, higher is wilder (default {d.temperature})")
    p.add_argument("--num-samples", type=int, metavar="N", help=f"samples to print, 0 for none "
                   f"(default {d.num_samples}; 1 with --stream)")
    p.add_argument("--length", type=int, metavar="N", help=f"characters per sample with --stream (default {d.length})")
    p.add_argument("--prompt", metavar="TEXT", help="samples start with this text")
    p.add_argument("--save", metavar="FILE", help="save the trained model to this JSON file")
    p.add_argument("--load", metavar="FILE", help="start from a saved model (its shape, vocabulary and mode); "
                   "--steps N then fine-tunes it")
    p.add_argument("--chain", nargs="?", const="", metavar="FILE.dot", help="print the model as a Markov chain "
                   "over its contexts (stream mode, at most 256 states); with FILE.dot also write it for Graphviz")
    p.add_argument("--explain", metavar="TEXT", help="print the model's predictions and attention for each "
                   "position of TEXT")
    p.add_argument("--plain", action="store_true", help="run Part I of microgpt.py alone (FAST = False): "
                   "the same numbers to rounding, about 20 times slower")
    return p


def check_settings(args, config):
    """Refuse impossible settings before any work is done."""
    for key in MODEL_SHAPE:
        if getattr(config, key) < 1:
            raise BadInput(f"--{key.replace('_', '-')} must be at least 1, not {getattr(config, key)}")
    if config.n_embd % config.n_head:
        raise BadInput(f"--n-embd {config.n_embd} is not divisible by --n-head {config.n_head}")
    if config.steps < 0 or (config.steps == 0 and not args.load):
        raise BadInput(f"--steps must be at least 1 (0 only with --load), not {config.steps}")
    for name in ("lr", "temperature"):
        value = getattr(config, name)
        if not (math.isfinite(value) and value > 0):
            raise BadInput(f"--{name} must be a positive number, not {value}")
    if config.batch != "all" and config.batch < 1:
        raise BadInput(f"--batch must be at least 1 or 'all', not {config.batch}")
    if config.num_samples < 0:
        raise BadInput(f"--num-samples must be 0 or more, not {config.num_samples}")
    if config.length < 1:
        raise BadInput(f"--length must be at least 1, not {config.length}")
    for path in (args.save, args.chain or None):
        if path is not None:
            directory = os.path.dirname(os.path.abspath(path))
            if os.path.isdir(path):
                raise BadInput(f"cannot write {path}: it is a directory")
            if not os.path.isdir(directory):
                raise BadInput(f"cannot write {path}: no such directory")
            if not os.access(directory, os.W_OK):
                raise BadInput(f"cannot write {path}: no permission to write in {directory}")


def label(token, chars):
    """A short printable name for a token."""
    if token == len(chars):
        return "<BOS>"
    # Backslash escapes keep every label printable and distinct: "\\s" is a space, "\\n" a newline.
    ch = chars[token]
    if ch in " \\":
        return {" ": "\\s", "\\": "\\\\"}[ch]
    return ch if ch.isprintable() else repr(ch)[1:-1]


def print_progress(step, num_steps, loss, smoothed, started, interactive):
    """The training progress line: raw and smoothed loss, time per step and time left. In a
    terminal it is rewritten in place about 100 times a run; in a log, printed 10 times."""
    every = max(1, num_steps // (100 if interactive else 10))
    if step % every and step not in (1, num_steps):
        return
    ms = 1000 * (time.perf_counter() - started) / step
    line = (f"step {step:{len(str(num_steps))}d}/{num_steps} | loss {loss:.4f} | smoothed {smoothed:.4f} | "
            f"{ms:.1f} ms/step | {ms * (num_steps - step) / 1000:.0f} s left")
    if interactive:      # back to the start of the line; two spaces cover a line that got shorter
        print("\r" + line + "  ", end="" if step < num_steps else "\n", flush=True)
    else:
        print(line, flush=True)


def print_chain(chain, chars, dot_path):
    """The Markov chain as an aligned table (and, with dot_path, as a Graphviz file)."""
    name = lambda state: "".join(label(t, chars) for t in state)
    print(f"Markov chain: {len(chain)} states (contexts of {len(chain[0][0])} tokens)")
    print("state".ljust(max(5, len(name(chain[0][0])))) + "  next token: probability -> next state")
    for state, probs in chain:
        moves = "   ".join(f"{label(t, chars)}: {p:6.1%} -> {name(state[1:] + (t,))}" for t, p in enumerate(probs))
        print(name(state).ljust(max(5, len(name(state)))) + "  " + moves)
    if dot_path:
        quote = lambda text: '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'
        lines = ["digraph markov_chain {"]
        for state, probs in chain:
            for t, p in enumerate(probs):
                lines.append(f"  {quote(name(state))} -> {quote(name(state[1:] + (t,)))} "
                             f"[label={quote(f'{label(t, chars)} ({p:.0%})')}];")
        lines.append("}")
        try:
            write_atomically(dot_path, "\n".join(lines) + "\n")
        except OSError as e:
            raise BadInput(f"cannot write {dot_path}: {e.strerror or e}") from None
        print(f"wrote {dot_path}")


def print_explanation(tokens, targets, weights, config, chars):
    """The microscope: predictions and losses per position, then attention heat maps."""
    rows = explain(tokens, weights, config)
    names = [label(t, chars) for t in tokens]
    print(f"{'pos':>3}  {'token':<6} {'top 5 next-token predictions':<52} {'next':<6} loss")
    for pos, (probs, _) in enumerate(rows):
        top = sorted(range(len(probs)), key=lambda t: -probs[t])[:5]
        guesses = "  ".join(f"{label(t, chars)} {probs[t]:.2f}" for t in top)
        target, nxt, loss = targets[pos], "", ""
        if target is not None:
            nxt = label(target, chars)
            loss = f"{-math.log(probs[target]):.3f}" if probs[target] > 0 else "inf"
        print(f"{pos:>3}  {names[pos]:<6} {guesses:<52} {nxt:<6} {loss}")
    shades = " .:-=+*#%@"
    print(f"\nattention: each row is a position reading; its columns are the positions it attends to "
          f"(0 to itself), shaded '{shades}' for weights 0 to 1")
    width = max(len(n) for n in names)
    header = " " * (width + 7) + " ".join(str(pos % 10) for pos in range(len(tokens)))
    for i in range(config.n_layer):
        for h in range(config.n_head):
            print(f"layer {i} head {h}")
            print(header)
            for pos, (_, heads) in enumerate(rows):
                cells = " ".join(shades[min(9, int(w * 10))] for w in heads[i * config.n_head + h])
                print(f"  {pos:>3} {names[pos]:>{width}} {cells}")


def settings(args):
    """The Config and mode asked for on the command line, merged with the checkpoint's when
    there is one. Returns (config, mode, checkpoint), checkpoint being None or
    load_checkpoint's (config, chars, params, mode, raw)."""
    config = Config(seed=args.seed, temperature=args.temperature)
    for key in ("lr", "batch"):                     # options left out keep Config's defaults
        if getattr(args, key) is not None:
            setattr(config, key, getattr(args, key))
    checkpoint = load_checkpoint(args.load) if args.load else None
    if checkpoint:
        saved, mode = checkpoint[0], checkpoint[3]
        for key in MODEL_SHAPE:
            given = getattr(args, key)
            if given is not None and given != getattr(saved, key):
                raise BadInput(f"--{key.replace('_', '-')} {given} contradicts the checkpoint "
                               f"({key} {getattr(saved, key)})")
            setattr(config, key, getattr(saved, key))
        if args.stream and mode != "stream":
            raise BadInput("--stream contradicts the checkpoint, which was trained on documents")
        config.steps = 0                    # a loaded model only samples unless --steps says otherwise
    else:
        mode = "stream" if args.stream else "docs"
        for key in MODEL_SHAPE:
            if getattr(args, key) is not None:
                setattr(config, key, getattr(args, key))
    if args.steps is not None:
        config.steps = args.steps
    if config.steps == 0:
        unused = [flag for flag, value in (("--input", args.input), ("--lr", args.lr), ("--batch", args.batch))
                  if value is not None]
        if unused:
            raise BadInput(f"{', '.join(unused)} only matter{'s' if len(unused) == 1 else ''} when training: "
                           "add --steps N to fine-tune the loaded model")
    if args.num_samples is not None:
        config.num_samples = args.num_samples
    elif mode == "stream":
        config.num_samples = 1              # one long text rather than 20 names
    if args.length is not None:
        if mode != "stream":
            raise BadInput("--length applies to continuous text (--stream)")
        config.length = args.length
    check_settings(args, config)
    if args.chain is not None and mode != "stream":
        raise BadInput("--chain needs a model of continuous text (--stream)")
    return config, mode, checkpoint


def prepare_data(path, config, mode, chars, rng):
    """Read the training data and say what it is. chars is None for a new model, whose
    vocabulary comes from the data. Returns (text, chars, batch_for_step, validation sequences)."""
    text = read_data_file(path)
    if mode == "stream":
        chars = chars or build_vocab(text)
        train_tokens, val_tokens = stream_split(encode_for(path, text, chars), config.block_size)
        if len(train_tokens) < config.block_size + 1:
            raise BadInput(f"{path} has {len(train_tokens)} characters, fewer than block_size + 1 = "
                           f"{config.block_size + 1}")
        held_out = f"validating on the last {len(val_tokens):,}" if val_tokens else ""
        print(f"data: {len(text):,} characters from {path}; training on {len(train_tokens):,}, "
              + (held_out or "too few to hold any out for validation"))
        return (text, chars, window_batches(train_tokens, config.block_size, config.batch, rng),
                stream_val_windows(val_tokens, config.block_size))
    docs = split_documents(text)
    chars = chars or build_vocab("".join(docs))
    encode_for(path, "".join(docs), chars)  # every character must be in the vocabulary
    train_docs, val_docs = train_val_split(docs, rng)
    held_out = f"validating on {len(val_docs):,}" if val_docs else ""
    print(f"data: {len(docs):,} documents from {path}; training on {len(train_docs):,}, "
          + (held_out or "too few to hold any out for validation"))
    return (text, chars, document_batches(train_docs, chars, config.batch),
            [encode_document(doc, chars) for doc in val_docs])


def explain_tokens(text, chars, config, mode):
    """The inputs and targets for --explain: a document is read from BOS and ends with BOS,
    a stream is read as it is (its last token has no target)."""
    ids = encode_for("--explain", text, chars)
    if mode == "docs":
        inputs, targets = [len(chars)] + ids, ids + [len(chars)]
    else:
        inputs, targets = ids, ids[1:] + [None]
    if not 1 <= len(inputs) <= config.block_size:
        longest = config.block_size - (1 if mode == "docs" else 0)
        if longest < 1:
            raise BadInput("--explain needs a block_size of at least 2 for a model of documents")
        raise BadInput(f"--explain text must be 1 to {longest} characters for a context of {config.block_size}")
    return inputs, targets


def train_with_progress(params, config, batches):
    """Train, printing progress. Returns (smoothed losses, whether Ctrl-C stopped it)."""
    # A first Ctrl-C stops at the end of the current step, so the model is whole when it is
    # saved; a second one stops at once.
    losses, smoothed, stop = [], [], []
    def on_ctrl_c(signum, frame):
        if stop:
            raise KeyboardInterrupt
        stop.append(True)
    previous_handler = signal.signal(signal.SIGINT, on_ctrl_c)
    interactive = sys.stdout.isatty()
    started = time.perf_counter()
    try:
        for step, loss in enumerate(train(params, config, batches, config.steps), start=1):
            if not math.isfinite(loss):
                raise BadInput(f"training diverged: the loss became {loss} at step {step} "
                               f"(try a smaller --lr than {config.lr}); nothing was saved")
            losses.append(loss)
            smoothed.append(sum(losses[-100:]) / len(losses[-100:]))   # one document is noisy
            print_progress(step, config.steps, loss, smoothed[-1], started, interactive)
            if stop:
                return smoothed, True
    finally:
        signal.signal(signal.SIGINT, previous_handler)
    elapsed = time.perf_counter() - started
    print(f"trained {config.steps} steps in {elapsed:.1f} s ({1000 * elapsed / config.steps:.1f} ms/step); "
          f"smoothed loss {smoothed[-1]:.4f}")
    ascii_only = not can_print("\u2581\u2588")
    print(f"loss curve: {smoothed[0]:.2f} {sparkline(smoothed, ascii_only=ascii_only)} {smoothed[-1]:.2f}")
    return smoothed, False


def print_samples(weights, config, chars, mode, prompt, stream_start):
    """num_samples new names (or texts, in stream mode)."""
    # Sampling has its own random stream, so the samples depend only on the weights and the
    # seed: a loaded checkpoint prints the same samples as the run that saved it.
    rng = random.Random(config.seed + 1)
    if config.num_samples:
        print(f"--- {config.num_samples} sample{'s' if config.num_samples > 1 else ''} "
              f"(temperature {config.temperature}) ---")
    for i in range(config.num_samples):
        if mode == "docs":
            print(f"sample {i + 1:2d}: {sample_document(weights, config, chars, rng, config.temperature, prompt)}")
        else:
            start = encode(prompt or stream_start, chars)
            print(decode(sample_stream(weights, config, rng, config.temperature, start, config.length), chars))
            if i + 1 < config.num_samples:
                print("---")


def run(args):
    """The main job: load or build a model, train it, report, sample. Returns the exit code."""
    config, mode, checkpoint = settings(args)
    rng = random.Random(config.seed)
    chars, params, text, val_seqs, raw = None, None, None, [], {}
    if checkpoint:
        _, chars, params, _, raw = checkpoint
    if config.steps > 0:
        text, chars, batches, val_seqs = prepare_data(args.input or default_data_path(), config, mode, chars, rng)
    vocab_size = len(chars) + (1 if mode == "docs" else 0)
    # Stream samples without a prompt start from the first character of the text.
    stream_start = text[0] if text else raw.get("stream_start", chars[0])

    # Check everything asked of the model before spending time on training it.
    prompt = args.prompt or ""
    if len(encode_for("--prompt", prompt, chars)) >= config.block_size and mode == "docs":
        raise BadInput(f"--prompt is {len(prompt)} characters; it must be shorter than block_size "
                       f"({config.block_size}) to leave room to generate")
    if args.explain is not None:
        explain_inputs, explain_targets = explain_tokens(args.explain, chars, config, mode)
    if args.chain is not None and vocab_size ** config.block_size > 256:
        raise BadInput(f"--chain needs at most 256 states; this model has {vocab_size}**{config.block_size}")

    params = params or init_params(config, vocab_size, rng)
    n_params = sum(rows * cols for rows, cols in param_shapes(config, vocab_size).values())
    print(f"model: {n_params:,} parameters, vocabulary of {vocab_size} tokens, "
          + ", ".join(f"{key} {getattr(config, key)}" for key in MODEL_SHAPE))

    # A fine-tuned model's checkpoint counts the steps of the run that saved it too.
    steps_before = raw.get("training", {}).get("steps", 0) if isinstance(raw.get("training"), dict) else 0
    steps_before = steps_before if type(steps_before) is int else 0

    def save(steps_done):
        if args.save:
            extra = {"training": {"steps": steps_before + steps_done, "seed": config.seed, "lr": config.lr}}
            if mode == "stream":
                extra["stream_start"] = stream_start
            save_checkpoint(args.save, params, config, chars, mode, extra)
            print(f"saved the model to {args.save}")

    if config.steps > 0:
        smoothed, interrupted = train_with_progress(params, config, batches)
        if interrupted:
            print(f"\ninterrupted after {len(smoothed)} of {config.steps} steps"
                  + (f"; saving to {args.save}" if args.save else ""), file=sys.stderr)
            save(len(smoothed))
            return 130
        if val_seqs:
            kind = "windows" if mode == "stream" else "documents"
            print(f"validation loss: {mean_token_loss(val_seqs, inference_weights(params), config):.4f} "
                  f"(mean per token over {len(val_seqs):,} held-out {kind})")
        save(config.steps)

    weights = inference_weights(params)
    if config.num_samples or args.chain is not None or args.explain is not None:
        check_finite_scores(weights, config)
    print_samples(weights, config, chars, mode, prompt, stream_start)
    if args.chain is not None:
        print_chain(markov_chain(weights, config, vocab_size), chars, args.chain)
    if args.explain is not None:
        print_explanation(explain_inputs, explain_targets, weights, config, chars)
    return 0


def can_print(text):
    """Whether stdout's encoding can show these characters (a Windows console may not)."""
    try:
        text.encode(sys.stdout.encoding or "ascii")
        return True
    except (UnicodeEncodeError, LookupError):
        return False


def main(argv=None):
    """Command-line entry point; returns the exit code."""
    if hasattr(sys.stdout, "reconfigure"):
        # Never crash on a character the terminal cannot show; print an escape instead.
        sys.stdout.reconfigure(errors="backslashreplace")
    global FAST
    fast_before = FAST
    try:
        args = make_parser().parse_args(argv)
        FAST = FAST and not args.plain
        with cycle_collector_paused():             # Part II, section II.3
            return run(args)
    except BadInput as e:
        print(f"microgpt: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("\nmicrogpt: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # The reader of our output went away (as in `python microgpt.py | head`): stop
        # quietly, and keep Python from complaining again when it flushes stdout at exit.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    finally:
        FAST = fast_before


if __name__ == "__main__":
    sys.exit(main())
