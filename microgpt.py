"""
microgpt: a complete GPT in one file of plain Python, no packages needed.

    python microgpt.py            # train on names.txt, then print new names
    python microgpt.py --help     # every option

The idea in three sentences. A GPT is a function that, given the tokens so far, returns a
probability for every possible next token. Training nudges its parameters so that the token
that really came next gets a higher probability. Sampling draws a token from those
probabilities, appends it, and repeats.

Read it top to bottom. Each section builds on the ones before it:

    1. Dataset      the text we learn from
    2. Tokenizer    text <-> integers
    3. Autograd     numbers that remember how they were computed, so we get gradients
    4. Parameters   the model's knobs, initialised at random
    5. Model        the transformer: embeddings, attention, MLP, logits
    6. Training     cross-entropy loss and the Adam optimizer
    7. Sampling     drawing new text from the trained model
    8. Look inside  continuous text, the GPT as a Markov chain, a per-token microscope

After that comes plumbing a learner can skip: checkpoints and the command line.
"""

import argparse
import gc
import itertools
import json
import math
import os
import random
import signal
import site
import stat
import sys
import tempfile
import time
from dataclasses import dataclass
from operator import mul


@dataclass
class Config:
    """Every hyperparameter in one place. The command line, the checkpoint and the code all
    read their defaults from here. You will meet each of them in the sections below."""
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
    batch: int = 1          # documents (or windows of text) per step
    seed: int = 42
    # sampling
    temperature: float = 0.5
    num_samples: int = 20
    length: int = 200       # characters to generate in continuous-text mode

    @property
    def head_dim(self):
        return self.n_embd // self.n_head


MODEL_SHAPE = ("n_layer", "n_embd", "n_head", "block_size")


class BadInput(Exception):
    """Something the user can fix: a missing file, an impossible setting. The command line
    turns it into a one-line message and exit code 2."""


# ---------------------------------------------------------------------------------------
# 1. Dataset
#
# A language model learns from examples of text. Here each example ("document") is one
# line of a text file: by default one first name per line, about 30,000 of them. We shuffle
# them with the seed, so runs are reproducible, and hold a few back: the validation set.
# The model never trains on those, so its loss on them tells us whether it learned the
# patterns of names in general or merely memorised the ones it saw.
# ---------------------------------------------------------------------------------------

def read_text(path):
    """The whole content of a UTF-8 text file, or BadInput saying why it cannot be had."""
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
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
# [BOS, e, m, m, a, BOS]. Real GPTs use tokens of several characters, but the idea is the same.
# ---------------------------------------------------------------------------------------

def build_vocab(text):
    """The sorted list of distinct characters; token id i stands for chars[i]."""
    return sorted(set(text))


def encode(text, chars):
    """Characters to token ids. Raises BadInput naming any character not in the vocabulary."""
    stoi = {ch: i for i, ch in enumerate(chars)}
    unknown = sorted(set(text) - set(stoi))
    if unknown:
        raise BadInput("characters the model has never seen: " + " ".join(repr(ch) for ch in unknown))
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
# remembers the Values it was computed from (its children) together with the local
# derivative of itself with respect to each child. backward() then applies the chain rule
# from the loss back to the parameters: each node passes its gradient to its children,
# multiplied by the local derivative, and a child used several times adds up what it gets.
# ---------------------------------------------------------------------------------------

class Value:
    """One number in the computation graph, with its gradient."""
    __slots__ = ("data", "grad", "_children", "_local_grads")
    tape = None   # while a list, every new Value is appended to it (see backward and train)

    def __init__(self, data, children=(), local_grads=()):
        self.data = data                  # the number itself
        self.grad = 0.0                   # d(loss)/d(this number), filled in by backward()
        self._children = children         # the Values this one was computed from
        self._local_grads = local_grads   # d(this)/d(child), one per child
        if Value.tape is not None:
            Value.tape.append(self)

    # Each operation computes its result and, right beside it, its local derivatives.
    # A plain number on the other side is a constant: it gets no node of its own.
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

    def __repr__(self):
        return f"Value(data={self.data}, grad={self.grad})"

    def backward(self, tape=None):
        """Fill in .grad of every Value this one depends on: d(self)/d(that Value).
        tape, if given, lists every node of the graph in the order they were created."""
        # A node may pass on its gradient only once it has received everything from the
        # nodes that use it, so we need the nodes in topological order (every node after
        # its children). Creation order is one, since a node's children always exist
        # before it: a recorded tape can be used as it is. Without a tape, a depth-first
        # search finds the order.
        self.grad = 1.0
        for node in reversed(tape if tape is not None else self.topological_order()):
            g = node.grad                    # complete now: every node using this one came later
            for child, local in zip(node._children, node._local_grads):
                child.grad += local * g      # the chain rule; a child used twice adds up both

    def topological_order(self):
        """This node and every node it depends on that has children, each after its children."""
        # An explicit stack instead of recursion, so a graph of any depth works. Each node
        # is pushed twice: once to push its children, and once more (children_done) to be
        # emitted after all of them. Leaves are skipped: they have nothing to pass on.
        order, visited, stack = [], set(), [(self, False)]
        while stack:
            node, children_done = stack.pop()
            if children_done:
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
        shapes[f"layer{i}.mlp_fc1"] = (4 * e, e)   # the MLP widens to 4*n_embd ...
        shapes[f"layer{i}.mlp_fc2"] = (e, 4 * e)   # ... and comes back
    return shapes


def init_params(config, vocab_size, rng):
    """Fresh random parameters: name -> [rows][cols] of Values."""
    return {name: [[Value(rng.gauss(0.0, config.init_std)) for _ in range(cols)] for _ in range(rows)]
            for name, (rows, cols) in param_shapes(config, vocab_size).items()}


def flatten(params):
    """All parameters in one list, in a fixed order: what the optimizer walks over."""
    return [p for matrix in params.values() for row in matrix for p in row]


def weights_of(params):
    """The same matrices holding plain floats: for when no gradient is needed."""
    return {name: [[p.data for p in row] for row in matrix] for name, matrix in params.items()}


# ---------------------------------------------------------------------------------------
# 5. Model
#
# The GPT reads one token at a time. For each position it turns the token into a vector,
# lets that vector gather information from the earlier positions (attention), thinks about
# it on its own (the MLP), and finally scores every possible next token (the logits).
#
# Every function below takes vectors either of Values (training: a graph is built for
# backward) or of plain floats (sampling and evaluation: no graph, much faster). With
# Values there are two ways to build the graph, atomic and fused (below). All give the
# same numbers. Read the lines that are not marked "Fused" first: they are the math, and
# most of them work on floats and on Values alike. The fused branch computes the same
# thing with fewer nodes.
#
# Fused nodes. The operations of section 3 make one node per + and *, so one output of a
# linear layer, sum_i w_i * x_i over 16 inputs, costs 32 nodes (16 products and 16 sums:
# sum() starts from 0). But a node may have any number of children: one node for the
# whole sum, whose local derivatives (x_i for w_i, w_i for x_i) are computed in the
# forward pass, gives exactly the same gradients with far less bookkeeping. Sections 5
# and 6 use such fused nodes where it matters for speed, each next to the atomic version
# it replaces. The MLP goes one step further: a hidden unit that the ReLU switches off
# gets no node at all. Set FUSED = False to build the graph the textbook way from section
# 3's operations only; the tests check that both give the same gradients.
# ---------------------------------------------------------------------------------------

FUSED = True


def dot(a, b, scale=1.0):
    """One node for scale * sum_i a[i] * b[i], where a and b are lists of Values.
    d/d a[i] = scale * b[i]   and   d/d b[i] = scale * a[i]."""
    ad = [v.data for v in a]
    bd = [v.data for v in b]
    return Value(sum(map(mul, ad, bd)) * scale, a + b,
                 [x * scale for x in bd] + [x * scale for x in ad])


def is_graph(vector):
    """True for a list of Values (build a graph), False for a list of plain floats."""
    return isinstance(vector[0], Value)


def linear(x, w):
    """Matrix times vector: y[i] = sum_j w[i][j] * x[j].   x: [n_in], w: [n_out][n_in] -> [n_out]"""
    if not is_graph(x):
        return [sum(map(mul, row, x)) for row in w]
    if not FUSED:
        return [sum(wi * xi for wi, xi in zip(row, x)) for row in w]
    # Fused: each output is one dot(row, x) node instead of 2 * n_in atomic ones
    # (written out here so that x's numbers are read once for all the rows).
    xd = [xi.data for xi in x]
    out = []
    for row in w:
        rd = [wi.data for wi in row]
        out.append(Value(sum(map(mul, rd, xd)), row + x, xd + rd))
    return out


def softmax(logits):
    """Scores -> probabilities: p[i] = exp(l[i]) / sum_j exp(l[j]).   [n] -> [n]"""
    # Subtracting the largest score changes nothing (it cancels in the ratio) but keeps exp
    # from overflowing.
    if is_graph(logits):
        m = max(l.data for l in logits)
        exps = [(l - m).exp() for l in logits]
    else:
        m = max(logits)
        exps = [math.exp(l - m) for l in logits]
    total = sum(exps)
    return [e / total for e in exps]


def rmsnorm(x):
    """Rescale x to a root-mean-square of 1: x / sqrt(mean(x**2) + 1e-5).   [n] -> [n]
    Keeps the numbers in a healthy range however many layers they pass through."""
    if is_graph(x) and FUSED:
        # Fused: one node for the scale s = (mean(x**2) + eps) ** -0.5 instead of 2n + 3
        # atomic nodes; its local derivatives are d s / d x[i] = -s**3 * x[i] / n.
        xd = [xi.data for xi in x]
        s = (sum(map(mul, xd, xd)) / len(x) + 1e-5) ** -0.5
        scale = Value(s, x, [-s ** 3 * xi / len(x) for xi in xd])
    else:
        scale = (sum(xi * xi for xi in x) / len(x) + 1e-5) ** -0.5
    return [xi * scale for xi in x]


def relu(x):
    """max(0, x) elementwise: the non-linearity that lets the MLP compute more than sums."""
    if is_graph(x):
        return [xi.relu() for xi in x]
    return [xi if xi > 0 else 0.0 for xi in x]


def mlp(x, w1, w2):
    """The MLP block's layers: linear, ReLU, linear.   [n_embd] -> [4 * n_embd] -> [n_embd]"""
    if not (is_graph(x) and FUSED):
        return linear(relu(linear(x, w1)), w2)
    # Fused: one node per hidden unit for its sum and its ReLU together, and only for the
    # units that are on. Where a unit is on, ReLU's slope is 1, so the node's local
    # derivatives are those of linear(). Where it is off (its sum is not positive), it
    # outputs 0 and ReLU's slope is 0: it adds nothing to the second layer's sums, no
    # gradient reaches its inputs through it, and w2's weights for it would get gradient
    # (their local derivative, the unit's output) times 0. So it gets no node at all and
    # the second layer skips it: no number changes. (In the default run about half of the
    # units are off at the start, and more as training goes on.)
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
    # w2's columns for those units: the same Values, not copies, so their gradients land
    # on the real weights.
    return linear(hidden, [[row[j] for j in on] for row in w2])


def attention_weights(q, ks):
    """How much the current position attends to each position so far:
    softmax over t of q . k[t] / sqrt(head_dim).   q: [head_dim], ks: [t][head_dim] -> [t]"""
    # Dividing by sqrt(head_dim) keeps the dot products near unit size whatever the head
    # size, so the softmax does not saturate into a hard one-hot choice at initialisation.
    scale = 1.0 / math.sqrt(len(q))
    return softmax([sum(qi * ki for qi, ki in zip(q, k)) * scale for k in ks])


def attention_head(q, ks, vs):
    """One attention head at the current position: the average of the values v[t] weighted
    by the attention weights.   q: [head_dim], ks, vs: [t][head_dim] -> [head_dim]
    ks and vs hold only this position and the earlier ones, so attention is causal: the
    model cannot peek at tokens it is supposed to predict."""
    if not (is_graph(q) and FUSED):
        p = attention_weights(q, ks)
        return [sum(pt * v[j] for pt, v in zip(p, vs)) for j in range(len(q))]
    # Fused: one node per score s[t] = q . k[t] / sqrt(d), then one node per output that
    # covers the softmax and the weighted sum together: out[j] = sum_t p[t] * v[t][j] with
    # p = softmax(s). Its local derivatives are
    #     d out[j] / d s[t] = p[t] * (v[t][j] - out[j])   and   d out[j] / d v[t][j] = p[t].
    scores = [dot(q, k, 1.0 / math.sqrt(len(q))) for k in ks]
    p = softmax([s.data for s in scores])
    out = []
    for j in range(len(q)):
        v_j = [v[j] for v in vs]
        vd = [v.data for v in v_j]
        o = sum(map(mul, p, vd))
        out.append(Value(o, scores + v_j, [pt * (vt - o) for pt, vt in zip(p, vd)] + p))
    return out


def gpt(token, pos, keys, values, params, config, attention_log=None):
    """The logits (a score for every possible next token) after reading `token` at position
    `pos`.   -> [vocab_size]
    keys and values are the key/value cache: per layer, the k and v vectors of the earlier
    positions. This call appends its own, so the next position can attend to this one, and
    nothing is computed twice. attention_log, if given, collects each head's weights."""
    hd = config.head_dim
    # The token says what, the position says where; the sum carries both.
    x = [t + p for t, p in zip(params["wte"][token], params["wpe"][pos])]   # [n_embd]
    x = rmsnorm(x)            # start every position from a vector of the same size
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
            heads.extend(attention_head(q_h, ks, vs))
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
# 1 has loss 0. Each step computes the mean loss over the positions of one document (or a
# batch of them), gets every parameter's gradient with backward(), and lets Adam move each
# parameter a little downhill.
# ---------------------------------------------------------------------------------------

def cross_entropy(logits, target):
    """-log softmax(logits)[target], the loss of one prediction.   [vocab_size] -> scalar"""
    if is_graph(logits) and not FUSED:
        return -softmax(logits)[target].log()
    # -log(exp(l[t]) / sum_j exp(l[j])) = log(sum_j exp(l[j])) - l[t]: the same number,
    # but it cannot take the log of a probability that underflowed to 0.
    ld = [l.data for l in logits] if is_graph(logits) else logits
    m = max(ld)
    loss = math.log(sum(math.exp(l - m) for l in ld)) + m - ld[target]
    if not is_graph(logits):
        return loss
    # Fused: one node for softmax and -log together. d loss / d logits[i] = p[i] - 1[i == target].
    grads = softmax(ld)
    grads[target] -= 1.0
    return Value(loss, logits, grads)


def mean(xs):
    """The average of a list of losses."""
    if is_graph(xs) and FUSED:
        # Fused: one node for the sum and the division. d mean / d x[i] = 1/n.
        return Value(sum(x.data for x in xs) / len(xs), xs, [1.0 / len(xs)] * len(xs))
    return sum(xs) / len(xs)


def sequence_losses(tokens, params, config):
    """The loss of predicting each of tokens[1:] from the tokens before it. A sequence longer
    than the context is cut to block_size predictions."""
    keys = [[] for _ in range(config.n_layer)]
    values = [[] for _ in range(config.n_layer)]
    n = min(config.block_size, len(tokens) - 1)
    return [cross_entropy(gpt(tokens[pos], pos, keys, values, params, config), tokens[pos + 1])
            for pos in range(n)]


def batch_loss(batch, params, config):
    """The mean over a batch of sequences of each sequence's mean loss."""
    return mean([mean(sequence_losses(tokens, params, config)) for tokens in batch])


def document_batches(docs, chars, batch):
    """batch_for_step for documents: the training documents in order, `batch` at a time
    ("all": every one of them at every step)."""
    seqs = [encode_document(doc, chars) for doc in docs]
    if batch == "all":
        return lambda step: seqs
    return lambda step: [seqs[(step * batch + b) % len(seqs)] for b in range(batch)]


def adam_update(flat_params, m, v, step, num_steps, config):
    """One step of Adam on every parameter, then reset the gradients for the next step.
    m and v are running averages of each gradient and of its square: the step follows the
    average direction, scaled down where the gradient is noisy."""
    lr = config.lr * (1 - step / num_steps)          # decays linearly to 0 over the run
    b1, b2 = config.beta1, config.beta2
    bias1 = 1 - b1 ** (step + 1)                     # m and v start at 0 and so are too small
    bias2 = 1 - b2 ** (step + 1)                     # early on; dividing by these corrects that
    c1, c2, eps = 1 - b1, 1 - b2, config.eps         # looked up once, not once per parameter
    for i, p in enumerate(flat_params):
        g = p.grad
        m[i] = b1 * m[i] + c1 * g
        v[i] = b2 * v[i] + c2 * g * g
        p.data -= lr * (m[i] / bias1) / ((v[i] / bias2) ** 0.5 + eps)
        p.grad = 0.0


def train(params, config, batch_for_step, num_steps):
    """Train for num_steps steps of Adam (a fresh optimizer), yielding each step's loss as it
    goes so the caller can report progress. batch_for_step(step) gives the token sequences
    to learn from at that step. This is a generator: nothing runs until the caller loops
    over it, as in `for loss in train(...)`."""
    flat = flatten(params)
    m = [0.0] * len(flat)
    v = [0.0] * len(flat)
    # The graph has no reference cycles, so CPython frees it by reference counting alone;
    # its cycle collector would only spend time scanning the thousands of new nodes. PyPy
    # has no reference counting and needs its collector to free them: leave it on there.
    gc_was_enabled = gc.isenabled()
    if sys.implementation.name == "cpython":
        gc.disable()
    try:
        for step in range(num_steps):
            # Record the nodes as the forward pass creates them, so backward need not
            # search the graph for an order.
            Value.tape = []
            loss = batch_loss(batch_for_step(step), params, config)
            tape, Value.tape = Value.tape, None
            loss.backward(tape)
            adam_update(flat, m, v, step, num_steps, config)
            yield loss.data
    finally:
        Value.tape = None
        if gc_was_enabled:
            gc.enable()


def mean_token_loss(sequences, weights, config):
    """Mean cross-entropy per predicted token over some sequences (the validation loss).
    Per token, so that every held-out character counts the same however long its document."""
    losses = [loss for tokens in sequences for loss in sequence_losses(tokens, weights, config)]
    return sum(losses) / len(losses)


# ---------------------------------------------------------------------------------------
# 7. Sampling
#
# To write a new name, feed BOS, turn the logits into probabilities, draw a token, feed it
# back in, and repeat until the model draws BOS (the end of the name) or the context is full.
# The temperature divides the logits first: below 1 it sharpens the distribution (safer,
# more typical names), above 1 it flattens it (more surprising ones). No gradient is
# needed, so this runs on plain floats.
# ---------------------------------------------------------------------------------------

def sample_token(logits, temperature, rng):
    """Draw a token id with probabilities softmax(logits / temperature)."""
    # Subtract the largest logit before dividing by the temperature: that changes no
    # probability, and keeps a tiny temperature from blowing the logits up to infinity.
    m = max(logits)
    if not math.isfinite(sum(logits)):
        raise BadInput("the model's scores are not finite numbers: its weights are too large to compute with")
    probs = softmax([(l - m) / temperature for l in logits])
    return rng.choices(range(len(probs)), weights=probs)[0]


def sample_document(weights, config, chars, rng, temperature, prompt=""):
    """One new document, starting with `prompt`. weights holds plain floats (weights_of)."""
    bos = len(chars)
    tokens = [bos] + encode(prompt, chars)
    keys = [[] for _ in range(config.n_layer)]
    values = [[] for _ in range(config.n_layer)]
    for pos in range(config.block_size):
        logits = gpt(tokens[pos], pos, keys, values, weights, config)
        if pos < len(tokens) - 1:
            continue      # the prompt's next token is given: this step only fills the cache
        token = sample_token(logits, temperature, rng)
        if token == bos:
            break
        tokens.append(token)
    return decode(tokens[1:], chars)


# That is the whole algorithm. Put together, `python microgpt.py` does:
#     docs = split_documents(read_text("names.txt"))
#     chars = build_vocab("".join(docs))
#     train_docs, val_docs = train_val_split(docs, rng)
#     params = init_params(config, len(chars) + 1, rng)       # + 1 for BOS
#     for loss in train(params, config, document_batches(train_docs, chars, 1), 1000):
#         ...print the progress...
#     weights = weights_of(params)
#     print(mean_token_loss([encode_document(d, chars) for d in val_docs], weights, config))
#     for _ in range(20):
#         print(sample_document(weights, config, chars, rng, 0.5))


# ---------------------------------------------------------------------------------------
# 8. Look inside
#
# Three ways to watch the model at work.
#
# Continuous text ("stream" mode). Instead of separate lines, the whole file is one stream
# of characters, newlines included, with no BOS token: each step learns from a random window
# of block_size + 1 characters, as in the classic Shakespeare GPT. Sampling slides the
# window along, so the model always sees the last block_size characters and nothing older.
#
# The Markov chain. Because of that window, the next token depends only on the last
# block_size tokens: the model is a Markov chain whose states are the possible windows. For
# a tiny vocabulary and context we can list every state, its next-token probabilities, and
# the state each token leads to.
#
# The microscope. For one input: what the model predicts at every position, and where each
# attention head looks.
# ---------------------------------------------------------------------------------------

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
    """Continue a stream of tokens by `length` tokens, yielding each as soon as it is drawn.
    Once the text is longer than the context, the model sees only the last block_size
    tokens (a sliding window), so nothing older needs to be kept."""
    window = list(start_tokens)[-config.block_size:]
    for _ in range(length):
        logits = logits_at_every_position(window, weights, config)[-1]
        token = sample_token(logits, temperature, rng)
        window = (window + [token])[-config.block_size:]
        yield token


# The Markov chain and the microscope

def markov_chain(weights, config, vocab_size):
    """Every full context (a tuple of block_size token ids) with its next-token
    probabilities: [(state, probs)]. Reading token t in state s leads to s[1:] + (t,)."""
    return [(state, softmax(logits_at_every_position(list(state), weights, config)[-1]))
            for state in itertools.product(range(vocab_size), repeat=config.block_size)]


def explain(tokens, weights, config):
    """For each position of a sequence: the next-token probabilities, and each head's
    attention weights over the positions so far (layer by layer, head by head)."""
    log = []
    logits = logits_at_every_position(tokens, weights, config, log)
    # gpt() appends one list of weights per head, layer by layer, at every position in
    # turn, so each position's share of the log is the next n_layer * n_head entries.
    heads = config.n_layer * config.n_head
    return [(softmax(l), log[pos * heads:(pos + 1) * heads]) for pos, l in enumerate(logits)]


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


# ---------------------------------------------------------------------------------------
# Checkpoints
#
# A trained model is its configuration, its vocabulary and its weights, saved as one JSON
# object (readable anywhere, and unlike pickle, loading it cannot run code). Loading checks
# every part, so a damaged or mismatched file is refused with a clear message.
#
# Files in general follow two rules. Reading is bounded: a file larger than MAX_FILE_BYTES
# (or endless, like /dev/zero) is refused rather than allowed to fill the memory. Writing
# never destroys what is not ours: a run replaces only a file it could have written itself
# (a checkpoint, a Graphviz file with our marker line), and always atomically.
# ---------------------------------------------------------------------------------------

MAX_FILE_BYTES = 100 * 2**20   # the largest data file or checkpoint we read: 100 MiB


def read_data_file(path, what="data file"):
    """The text of a UTF-8 file (a leading byte-order mark dropped), or BadInput saying why
    it cannot be had. At most MAX_FILE_BYTES are read, so an endless or huge file is refused
    after reading that much, not after filling the memory."""
    if not path:
        raise BadInput(f"the {what} name is empty")
    try:
        info = os.stat(path)
        if stat.S_ISDIR(info.st_mode):
            raise IsADirectoryError
        regular, size = stat.S_ISREG(info.st_mode), info.st_size
        if regular and size > MAX_FILE_BYTES:
            raise BadInput(f"{path} is larger than {MAX_FILE_BYTES // 2**20} MB, the most microgpt reads")
        if regular and size > 16 * 2**20:
            print(f"reading {path} ({size / 2**20:.0f} MB): a large file takes a while to prepare", flush=True)
        elif not regular:         # a pipe or a device: it may keep us waiting, or never end
            print(f"reading {path} until it ends (at most {MAX_FILE_BYTES // 2**20} MB)", flush=True)
        with open(path, "rb") as f:
            data = f.read(MAX_FILE_BYTES + 1)
    except FileNotFoundError:
        raise BadInput(f"{what} not found: {path}") from None
    except IsADirectoryError:
        raise BadInput(f"{path} is a directory, not a {what}") from None
    except OSError as e:
        raise BadInput(f"cannot read {path}: {e.strerror or e}") from None
    if len(data) > MAX_FILE_BYTES:
        raise BadInput(f"{path} is larger than {MAX_FILE_BYTES // 2**20} MB, the most microgpt reads")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise BadInput(f"{path} is not UTF-8 text (byte 0x{e.object[e.start]:02x} at offset {e.start})") from None
    text = text.lstrip("\ufeff")   # some editors start UTF-8 files with an invisible mark
    if not text.strip():
        raise BadInput(f"{what} is empty: {path}")
    return text


def is_checkpoint(path):
    """Whether `path` holds a microgpt checkpoint: the only kind of file --save replaces."""
    try:
        if os.path.getsize(path) > MAX_FILE_BYTES:
            return False
        with open(path, encoding="utf-8-sig") as f:
            content = json.load(f)
    except (OSError, ValueError, RecursionError):
        return False
    return isinstance(content, dict) and content.get("format") == "microgpt"


GRAPHVIZ_MARKER = "// written by microgpt --chain"   # the first line of every .dot file we write


def is_our_graphviz_file(path):
    """Whether `path` is a Graphviz file that --chain wrote: the only kind it replaces."""
    try:
        with open(path, encoding="utf-8") as f:
            return f.readline(len(GRAPHVIZ_MARKER) + 2).rstrip("\r\n") == GRAPHVIZ_MARKER
    except (OSError, ValueError):
        return False


def check_can_write(path, is_ours, what):
    """Refuse, before any work is done, to write to `path` unless it is a new file or one that
    is_ours(path) recognises as our own output (`what` names that kind: "microgpt checkpoint").
    A run never replaces the user's data, program, notes or devices by a slip of the finger."""
    if not path:
        raise BadInput(f"the name of the {what} to write is empty")
    if os.path.isdir(path):
        raise BadInput(f"cannot write {path}: it is a directory")
    if os.path.lexists(path):
        if not os.path.isfile(path):               # a device, a pipe, a broken symlink
            raise BadInput(f"cannot write {path}: it is not a regular file")
        if not is_ours(path):
            raise BadInput(f"{path} exists and is not a {what}; microgpt replaces only its own files "
                           "(choose another name, or move that file away)")
        if not os.stat(path).st_mode & stat.S_IWUSR:   # the user made it read-only: respect that
            raise BadInput(f"cannot write {path}: it is read-only")
    # A symlink is replaced at its target (write_atomically), so that directory must be writable.
    directory = os.path.dirname(os.path.realpath(path))
    if not os.path.isdir(directory):
        raise BadInput(f"cannot write {path}: no such directory")
    if not os.access(directory, os.W_OK):
        raise BadInput(f"cannot write {path}: no permission to write in {directory}")


def same_file(a, b):
    """Whether two paths name the same file (through symlinks), whether or not it exists yet."""
    try:
        return os.path.samefile(a, b)
    except OSError:
        return os.path.normcase(os.path.realpath(a)) == os.path.normcase(os.path.realpath(b))


def write_atomically(path, text):
    """Write to a temporary file beside `path`, then rename it over `path`: the rename is
    atomic, so an interrupted write never leaves half a file or destroys the old one."""
    path = os.path.realpath(path)        # through a symlink: the link stays, its target is replaced
    directory = os.path.dirname(path)
    fd, tmp = tempfile.mkstemp(prefix=".microgpt-", suffix=".tmp", dir=directory)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        try:                              # a file we replace keeps the permissions it had
            mode = stat.S_IMODE(os.stat(path).st_mode)
        except FileNotFoundError:         # mkstemp makes the file private; use the usual mode
            umask = os.umask(0)
            os.umask(umask)
            mode = 0o666 & ~umask
        os.chmod(tmp, mode)
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
    text = read_data_file(path, "checkpoint")     # checked like a data file: size, UTF-8, BOM
    try:
        ckpt = json.loads(text)
    except (ValueError, RecursionError):
        raise BadInput(f"{path} is not a JSON checkpoint") from None

    def bad(why):
        return BadInput(f"{path}: {why}")
    if not isinstance(ckpt, dict) or ckpt.get("format") != "microgpt":
        raise bad('not a microgpt checkpoint (no "format": "microgpt")')
    if type(ckpt.get("version")) is not int or ckpt["version"] != 1:     # not 1.0, not true
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
    check_memory(config, vocab_size)           # before building a Value for every weight
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
    data = default_data_path().replace("%", "%%")   # argparse reads % in help as a format
    p.add_argument("--input", metavar="FILE", help="UTF-8 text file: one document per line, or one stream "
                   f"of text with --stream (default: {data})")
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
    p.add_argument("--chain", nargs="?", const=True, metavar="FILE.dot", help="print the model as a Markov chain "
                   "over its contexts (stream mode, at most 256 states); with FILE.dot also write it for Graphviz")
    p.add_argument("--explain", metavar="TEXT", help="print the model's predictions and attention for each "
                   "position of TEXT")
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
    # What this run will write must be new or our own, and never a file it reads.
    data = (args.input or default_data_path()) if config.steps > 0 else None
    if args.save:
        if data and same_file(args.save, data):
            raise BadInput(f"--save {args.save} is the data file: saving would replace it")
        check_can_write(args.save, is_checkpoint, "microgpt checkpoint")
    if args.chain:
        for flag, other in (("--input", data), ("--load", args.load), ("--save", args.save)):
            if other and same_file(args.chain, other):
                raise BadInput(f"--chain {args.chain} is the same file as {flag} {other}")
        check_can_write(args.chain, is_our_graphviz_file, "Graphviz file written by microgpt")


def memory_limit():
    """The memory this process may use, in bytes: the machine's, or a container's or a
    ulimit's if smaller; None where it cannot be found out."""
    limits = []
    try:
        limits.append(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))    # Linux, macOS
    except (AttributeError, ValueError, OSError):
        pass
    try:
        with open("/sys/fs/cgroup/memory.max", encoding="utf-8") as f:      # a Linux container
            limits.append(int(f.read()))                                    # "max": no limit
    except (OSError, ValueError):
        pass
    try:
        import resource                                                     # POSIX only
        soft = resource.getrlimit(resource.RLIMIT_AS)[0]
        if soft != resource.RLIM_INFINITY:
            limits.append(soft)
    except (ImportError, AttributeError, ValueError, OSError):
        pass
    if os.name == "nt":
        try:
            import ctypes
            kb = ctypes.c_ulonglong()
            if ctypes.windll.kernel32.GetPhysicallyInstalledSystemMemory(ctypes.byref(kb)):
                limits.append(kb.value * 1024)
        except (ImportError, AttributeError, OSError):
            pass
    return min(limits) if limits else None


def graph_bytes(config, vocab_size, positions):
    """About how much memory the graph of one document of `positions` tokens takes (measured
    on CPython; rough, but on the large side). Per position: about 400 * n_embd**2 bytes per
    layer (each linear layer's output node keeps a list of its inputs and one of their local
    derivatives), 160 * n_embd * t more for attention over t positions, and 40 * vocab_size *
    n_embd for the logits. Building it is most of a step's time, too: roughly 10 ms per MB on
    CPython."""
    e, layers, t = config.n_embd, config.n_layer, positions
    return t * (layers * 400 * e * e + 40 * vocab_size * e) + layers * 160 * e * t * (t + 1) // 2


def format_bytes(n):
    """A size for people: "1.4 GB", "310.1 MB"."""
    return f"{n / 2**30:,.1f} GB" if n >= 2**30 else f"{n / 2**20:,.1f} MB"


def check_memory(config, vocab_size, positions=1, data_bytes=0):
    """Refuse, before anything is allocated, a model that cannot fit in memory, saying how much
    it would need: about 200 bytes per parameter (its Value, Adam's two averages, a float
    copy), the graph of one document, and the data."""
    e = config.n_embd
    n_params = (2 * vocab_size + config.block_size) * e + config.n_layer * 12 * e * e   # as param_shapes
    graph = graph_bytes(config, vocab_size, positions)
    # Two graphs can be alive at once: the last one is freed only when the next is built.
    need, limit = 200 * n_params + 2 * graph + data_bytes, memory_limit()
    if sys.implementation.name == "pypy":
        need *= 3     # its collector lets garbage pile up before it frees it: measured up to 3x
    if limit is not None and need > limit:
        data = f", {format_bytes(data_bytes)} for the data and a step's batch" if data_bytes else ""
        fix = "--batch or data file" if 2 * data_bytes > need else "--n-embd, --n-layer or --block-size"
        raise BadInput(f"this would need about {format_bytes(need)} of memory ({n_params:,} parameters, "
                       f"{format_bytes(graph)} for one document's graph{data}), "
                       f"more than the {format_bytes(limit)} there is: choose a smaller {fix}")


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
        lines = [GRAPHVIZ_MARKER, "digraph markov_chain {"]
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
    for flag in ("input", "load", "save", "chain"):     # an empty name would be silently ignored
        if getattr(args, flag) == "":
            raise BadInput(f"--{flag} needs a file name, not an empty string")
    if args.chain is True:
        args.chain = ""                     # --chain without a file name: print the chain only
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
        unused = [flag for flag, value in (("--input", args.input), ("--lr", args.lr), ("--batch", args.batch),
                                           ("--save", args.save)) if value is not None]
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
        # The text as token ids, twice (all, and the training part), and each step's windows.
        windows = (len(text) if config.batch == "all" else config.batch) * (64 + 8 * config.block_size)
        check_memory(config, len(chars), config.block_size, 20 * len(text) + windows)
        train_tokens, val_tokens = stream_split(encode_for(path, text, chars), config.block_size)
        if len(train_tokens) < config.block_size + 1:
            raise BadInput(f"{path} has {len(train_tokens)} characters, fewer than block_size + 1 = "
                           f"{config.block_size + 1}")
        held_out = f"validating on the last {len(val_tokens):,}" if val_tokens else ""
        val_windows = stream_val_windows(val_tokens, config.block_size)
        if len(val_windows) > 1000:
            # As for documents, at most 1000: spread evenly over the held-out text, so the
            # number stays comparable while a long text is not validated for hours.
            val_windows = [val_windows[i * len(val_windows) // 1000] for i in range(1000)]
            held_out = f"validating on 1,000 windows spread over the last {len(val_tokens):,}"
        print(f"data: {len(text):,} characters from {path}; training on {len(train_tokens):,}, "
              + (held_out or "too few to hold any out for validation"))
        return text, chars, window_batches(train_tokens, config.block_size, config.batch, rng), val_windows
    docs = split_documents(text)
    chars = chars or build_vocab("".join(docs))
    # Each document as a string and as a list of token ids (about 30 bytes per character),
    # and the list of a step's documents.
    check_memory(config, len(chars) + 1, min(config.block_size, max(map(len, docs)) + 1),
                 30 * len(text) + (0 if config.batch == "all" else 8 * config.batch))
    encode_for(path, "".join(docs), chars)  # every character must be in the vocabulary
    train_docs, val_docs = train_val_split(docs, rng)
    held_out = f"validating on {len(val_docs):,}" if val_docs else ""
    print(f"data: {len(docs):,} documents from {path}; training on {len(train_docs):,}, "
          + (held_out or "too few to hold any out for validation"))
    return (text, chars, document_batches(train_docs, chars, config.batch),
            [encode_document(doc, chars) for doc in val_docs])


def encode_for(what, text, chars):
    """encode(), with the error saying what was being encoded."""
    try:
        return encode(text, chars)
    except BadInput as e:
        raise BadInput(f"{what}: {e}") from None


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


class Stopped(KeyboardInterrupt):
    """Ctrl-C or SIGTERM, raised where the run must stop at once. args[0]: the signal."""


class StopSignals:
    """What Ctrl-C (SIGINT), SIGTERM (sent by kill, timeout, schedulers) and SIGHUP do. While
    `finishing` is set (from the start of training until the model is saved), the first one
    only asks the run to stop after the current step, so the model is whole when it is saved;
    at any other time, and the second time, it stops at once (raising Stopped)."""

    def __init__(self):
        self.signum = None          # the first stop signal received, if any
        self.finishing = False

    def __call__(self, signum, frame):
        first = self.signum is None
        self.signum = self.signum or signum
        if not (first and self.finishing):
            raise Stopped(signum)
        # A step can be long (--batch all): say at once that the signal was heard.
        print("\nmicrogpt: stopping after this step (Ctrl-C again stops at once)", file=sys.stderr, flush=True)

    def install(self):
        """Handle the stop signals this platform has; returns a function that undoes it."""
        previous = {}
        for name in ("SIGINT", "SIGTERM", "SIGHUP"):
            try:
                number = getattr(signal, name)
                previous[number] = signal.signal(number, self)
            except (AttributeError, ValueError, OSError):   # not on this platform, or not the main thread
                pass
        return lambda: [signal.signal(number, handler) for number, handler in previous.items()]


def train_with_progress(params, config, batches, stop):
    """Train, printing progress. Returns (smoothed losses, whether a stop signal ended it early)."""
    losses, smoothed = [], []
    interactive = sys.stdout.isatty()
    started = time.perf_counter()
    for step, loss in enumerate(train(params, config, batches, config.steps), start=1):
        if not math.isfinite(loss):
            raise BadInput(f"training diverged: the loss became {loss} at step {step} "
                           f"(try a smaller --lr than {config.lr}); nothing was saved")
        losses.append(loss)
        smoothed.append(sum(losses[-100:]) / len(losses[-100:]))   # one document is noisy
        print_progress(step, config.steps, loss, smoothed[-1], started, interactive)
        if stop.signum is not None and step < config.steps:
            return smoothed, True
    elapsed = time.perf_counter() - started
    print(f"trained {config.steps} steps in {elapsed:.1f} s ({1000 * elapsed / config.steps:.1f} ms/step); "
          f"smoothed loss {smoothed[-1]:.4f}")
    ascii_only = not can_print("\u2581\u2588")
    print(f"loss curve: {smoothed[0]:.2f} {sparkline(smoothed, ascii_only=ascii_only)} {smoothed[-1]:.2f}")
    return smoothed, False


def check_not_wrecked(smoothed, vocab_size, lr):
    """Refuse to keep a model that training made worse than it started. A learning rate far
    too large throws the weights about: the loss shoots up and, even if it comes down again,
    often ends many times higher than where it began. On names.txt, 1000 steps end with a
    smoothed loss of 2.40 at --lr 0.01, 2.44 at 0.05, 2.75 at 0.3 (all below the 3.49 they
    start at), but 10.4 at 0.5 and 22.7 at 1. So the rule: ending above 1.5 times the
    starting loss (or uniform guessing, ln vocab_size, if that is higher) is a wreck."""
    start = max(smoothed[0], math.log(vocab_size))
    if smoothed[-1] > 1.5 * start:
        raise BadInput(f"training wrecked the model: its smoothed loss ended at {smoothed[-1]:.2f}, far above "
                       f"the {smoothed[0]:.2f} it started at (uniform guessing: {math.log(vocab_size):.2f}); "
                       f"try a smaller --lr than {lr}; nothing was saved")


def validation_loss(sequences, weights, config):
    """mean_token_loss (the same number, summed in the same order), but saying how far it has
    got every 10 seconds, so that a long validation is never silent."""
    losses, started = [], time.perf_counter()
    said = started
    for i, tokens in enumerate(sequences, start=1):
        losses.extend(sequence_losses(tokens, weights, config))
        now = time.perf_counter()
        if now - said > 10 and i < len(sequences):
            print(f"validating: {i:,} of {len(sequences):,} held-out sequences, "
                  f"{(now - started) / i * (len(sequences) - i):.0f} s left", flush=True)
            said = now
    return sum(losses) / len(losses)


def print_samples(weights, config, chars, mode, prompt, stream_start):
    """num_samples new names (or texts, in stream mode)."""
    # Sampling has its own random stream, so the samples depend only on the weights and the
    # seed: a loaded checkpoint prints the same samples as the run that saved it.
    rng = random.Random(config.seed + 1)
    if config.num_samples:
        print(f"--- {config.num_samples} sample{'s' if config.num_samples > 1 else ''} "
              f"(temperature {config.temperature}) ---")
    for i in range(config.num_samples):
        if output_lost():                 # nobody reads them any more: stop
            return
        if mode == "docs":
            print(f"sample {i + 1:2d}: {sample_document(weights, config, chars, rng, config.temperature, prompt)}")
        else:
            start = encode(prompt or stream_start, chars)
            print(decode(start, chars), end="", flush=True)
            # Each character as soon as it is drawn: a long sample is never a long silence.
            for token in sample_stream(weights, config, rng, config.temperature, start, config.length):
                print(chars[token], end="", flush=True)
                if output_lost():
                    return
            print()
            if i + 1 < config.num_samples:
                print("---")


def run(args, stop=None):
    """The main job: load or build a model, train it, report, sample. Returns the exit code."""
    stop = stop or StopSignals()
    config, mode, checkpoint = settings(args)
    rng = random.Random(config.seed)
    chars, params, text, val_seqs, raw = None, None, None, [], {}
    if checkpoint:
        _, chars, params, _, raw = checkpoint
    else:
        check_memory(config, vocab_size=2)    # an impossible shape is refused before reading the data
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

    n_params = sum(rows * cols for rows, cols in param_shapes(config, vocab_size).values())
    print(f"model: {n_params:,} parameters, vocabulary of {vocab_size} tokens, "
          + ", ".join(f"{key} {getattr(config, key)}" for key in MODEL_SHAPE), flush=True)
    params = params or init_params(config, vocab_size, rng)

    # A fine-tuned model's checkpoint counts the steps of the run that saved it too.
    steps_before = raw.get("training", {}).get("steps", 0) if isinstance(raw.get("training"), dict) else 0
    steps_before = steps_before if type(steps_before) is int else 0

    def save(steps_done):
        if args.save:
            extra = {"training": {"steps": steps_before + steps_done, "seed": config.seed, "lr": config.lr}}
            if mode == "stream":
                extra["stream_start"] = stream_start
            save_checkpoint(args.save, params, config, chars, mode, extra)
            stop.finishing = False        # the model is safe: from now on a signal stops at once
            print(f"saved the model to {args.save}")

    if config.steps > 0:
        kind = "windows" if mode == "stream" else "documents"
        # batches(0) is safe to call only for "all": random windows would use up the rng
        n = len(batches(0)) if config.batch == "all" else config.batch
        step_graphs = n * graph_bytes(config, vocab_size, config.block_size)
        if n > 100 or step_graphs > 2**28:          # a step of more than a few seconds
            what = f"learns from {n:,} {kind} (graphs of" if n > 1 else "builds a graph of"
            print(f"each step {what} up to {format_bytes(step_graphs)}{' in all)' if n > 1 else ''}: "
                  "expect a wait for each progress line", flush=True)
        # From here until the model is saved, a first Ctrl-C or SIGTERM lets the current step
        # finish; then the model is saved as soon as training ends, before anything else.
        stop.finishing = True
        smoothed, interrupted = train_with_progress(params, config, batches, stop)
        check_not_wrecked(smoothed, vocab_size, config.lr)
        if stop.signum is not None:
            print(f"\ninterrupted by {signal.Signals(stop.signum).name} after {len(smoothed)} of {config.steps} "
                  f"steps" + (f"; saving to {args.save}" if args.save else ""), file=sys.stderr)
        save(len(smoothed))
        stop.finishing = False
        if stop.signum is not None:
            return 128 + stop.signum
        if val_seqs and not output_lost():
            print(f"validation loss: {validation_loss(val_seqs, weights_of(params), config):.4f} "
                  f"(mean per token over {len(val_seqs):,} held-out {kind})")

    weights = weights_of(params)
    print_samples(weights, config, chars, mode, prompt, stream_start)
    if args.chain is not None:
        print_chain(markov_chain(weights, config, vocab_size), chars, args.chain)
    if args.explain is not None and not output_lost():
        print_explanation(explain_inputs, explain_targets, weights, config, chars)
    return 0


def can_print(text):
    """Whether stdout's encoding can show these characters (a Windows console may not)."""
    try:
        text.encode(sys.stdout.encoding or "ascii")
        return True
    except (UnicodeEncodeError, LookupError):
        return False


class GuardedOutput:
    """sys.stdout, except that a failure to write to it (the reader of a pipe went away, as
    in `python microgpt.py --save m.json | head`, or the disk is full) stops the printing,
    not the job: training goes on and the model is still saved. .error keeps the failure."""

    def __init__(self, stream):
        self.stream, self.error = stream, None
        if stream is None:                # started with stdout closed (`>&-`): as if nobody reads
            self.stream, self.error = open(os.devnull, "w", encoding="utf-8"), BrokenPipeError()

    def write(self, text):
        if self.error is None:
            try:
                return self.stream.write(text)
            except OSError as e:
                self.fail(e)
        return len(text)

    def flush(self):
        if self.error is None:
            try:
                self.stream.flush()
            except OSError as e:
                self.fail(e)

    def fail(self, error):
        self.error = error
        try:    # point the real stdout at the null device, so Python's flush at exit is quiet too
            os.dup2(os.open(os.devnull, os.O_WRONLY), self.stream.fileno())
        except (OSError, ValueError):
            pass

    def __getattr__(self, name):          # isatty, encoding, ...: those of the real stdout
        return getattr(self.stream, name)


def output_lost():
    """Whether stdout can no longer be written (see GuardedOutput): work done only to be
    printed (validation, samples) then stops, instead of running on for nobody."""
    return getattr(sys.stdout, "error", None) is not None


def main(argv=None):
    """Command-line entry point; returns the exit code."""
    if hasattr(sys.stdout, "reconfigure"):
        # Never crash on a character the terminal cannot show; print an escape instead.
        sys.stdout.reconfigure(errors="backslashreplace")
    out = sys.stdout = GuardedOutput(sys.stdout)
    stop = StopSignals()
    restore_signals = stop.install()
    try:
        code = run(make_parser().parse_args(argv), stop)
    except BadInput as e:
        print(f"microgpt: error: {e}", file=sys.stderr)
        code = 2
    except KeyboardInterrupt as e:        # Stopped, or a Ctrl-C before the handlers were set
        signum = e.args[0] if isinstance(e, Stopped) else signal.SIGINT
        print(f"\nmicrogpt: interrupted by {signal.Signals(signum).name}", file=sys.stderr)
        code = 128 + signum
    except MemoryError:
        print("microgpt: error: out of memory: choose a smaller --n-embd, --n-layer, --block-size or "
              "--batch", file=sys.stderr)
        code = 2
    finally:
        restore_signals()
        sys.stdout = out.stream
    if out.error is not None and not isinstance(out.error, BrokenPipeError):
        # A reader that went away is no error (`| head` wants only the first lines); anything
        # else that kept the output from being written is, though the job itself went on.
        print(f"microgpt: error: could not write the output: {out.error.strerror or out.error}", file=sys.stderr)
        code = code or 2
    return code


if __name__ == "__main__":
    sys.exit(main())
