"""
microgpt: a complete GPT in one file of plain Python, no packages needed.

    python microgpt.py            # train on names.txt, then print 20 new names
    python microgpt.py --help     # every option

A GPT is a function that, given the tokens so far, returns a probability for every possible
next token. Training nudges its parameters so that the token that really came next gets a
higher probability. Sampling draws a token from those probabilities, appends it, and repeats.
Here is the whole algorithm, with the numbers of the sections that explain each line. Many
of its words (parameters, batch, Adam, weights) are explained only in those sections: read
it now as a map, and come back to it at the end of Part I, where it reads as a summary. It
prints the numbers `python microgpt.py` prints (a test checks that), plainly, without the
program's extras (the smoothed loss, timings, headings):

    config, rng = Config(), random.Random(42)
    docs = split_documents(read_text("names.txt"))       # 1. the examples: one name per line
    chars = build_vocab("".join(docs))                    # 2. one token per letter, plus BOS
    train_docs, val_docs = train_val_split(docs, rng)     # 1. hold out 1,000 names to test on
    train_seqs = [encode_document(d, chars) for d in train_docs]   # 2. [BOS, e, m, m, a, BOS]
    val_seqs = [encode_document(d, chars) for d in val_docs]       #    as token ids
    params = init_params(config, len(chars) + 1, rng)     # 4. the model: 4,192 random numbers
    batch_for_step = document_batches(train_seqs, config.batch)    # 6. one name per step
    for loss in train(params, config, batch_for_step, config.steps):  # 5. gpt(), 3. backward(), 6. Adam
        print(f"loss {loss:.4f}")                         # train() yields each step's loss
    weights = inference_weights(params)                   # 7. the weights, for use without training
    val_loss = mean_token_loss(val_seqs, weights, config) # 6. the loss on the held-out names
    print(f"validation loss: {val_loss:.4f}")
    sample_rng = random.Random(config.seed + 1)           # 7. sampling has its own random stream
    for _ in range(config.num_samples):
        print(sample_document(weights, config, chars, sample_rng, config.temperature))

The file has six parts:

    Part I    The algorithm       1 Dataset, 2 Tokenizer, 3 Autograd, 4 Parameters,
                                  5 Model, 6 Training, 7 Sampling
    Part II   Making it fast      the same numbers, about 14 times faster on CPython
    Part III  Looking inside      text as one stream, the GPT seen as a Markov chain, and a
                                  per-position view of its predictions and its attention
    Part IV   From microgpt to GPT-2   tokens bigger than letters (byte-pair encoding),
                                  then OpenAI's GPT-2 as seven changes to Part I's model
    Part V    From names to an assistant   a chat format, fine-tuning with a loss mask,
                                  reinforcement learning from a reward computed by code
    Part VI   The plumbing        checkpoints, files, errors, the command line, the
                                  drawing of the --report page, and the chat's web server

Part I is the lesson: every piece of the algorithm, each written once and plainly. A reader
who stops at its end has seen all of it. Part II is the second lesson: how the same math is
made fast, as real frameworks do it, with the same numbers: every printed number is the
same to the last digit, and the numbers inside agree to floating-point rounding
(differences of 1e-16 to 1e-15).
"""

if __name__ == "__main__":
    # Plumbing that has to come first (a learner can skip it). Run as a program: until
    # main() installs its own handlers (Part VI, "Stop signals"), and again after it
    # returns, a Ctrl-C or SIGTERM ends the run at once, quietly, with the usual exit code
    # (130, 143, 129), not with a traceback from whatever was being imported. (_signal is
    # the signal module's core, built in: importing `signal` itself takes long enough for a
    # Ctrl-C to arrive during it.)
    import _signal
    import os
    import sys

    def quit_quietly(signum, frame, names={2: "SIGINT", 15: "SIGTERM", 1: "SIGHUP"}):
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except Exception:         # even a flush that the signal interrupted
                pass
        os.write(2, f"\nmicrogpt: interrupted by {names[signum]}\n".encode())
        os._exit(128 + signum)
    for _number in (2, 15, 1) if hasattr(_signal, "SIGHUP") else (2, 15):   # Windows has no SIGHUP
        _signal.signal(_number, quit_quietly)

import math
import random
from dataclasses import dataclass


@dataclass      # writes Config's __init__ for us, taking each field below as an argument
class Config:
    """Every hyperparameter in one place. The command line, a checkpoint (a saved model, Part
    VI) and the code all read their defaults from here. You will meet each of them in Part I,
    where its words (embedding, head, MLP, Adam) are explained: skim this list now, as a map,
    and come back to it.

    With these defaults and the 27 tokens of names.txt, the model has 4,192 parameters (the
    matrices are named in section 4): wte 27 x 16 + wpe 16 x 16 + lm_head 27 x 16 = 1,120 for
    the embeddings and the output, and per layer 4 x 16 x 16 = 1,024 for attention plus
    2 x 64 x 16 = 2,048 for the MLP (its hidden layer is 4 x n_embd = 64 wide)."""
    # the shape of the model (a checkpoint stores exactly these four)
    n_layer: int = 1        # how many transformer blocks are stacked
    n_embd: int = 16        # the width of every vector inside the model
    n_head: int = 4         # attention heads per block; each looks at n_embd // n_head numbers
    block_size: int = 16    # the longest context the model can see, in tokens
    # training
    steps: int = 1000
    lr: float = 0.01        # Adam's learning rate, decayed linearly over the run
    beta1: float = 0.85     # how slowly Adam's average of the gradient forgets (section 6)
    beta2: float = 0.99     # the same for its average of the squared gradient
    eps: float = 1e-8       # keeps Adam from dividing by zero
    init_std: float = 0.08  # the spread of the random initial weights
    batch: "int | str" = 1  # documents (or text windows, Part III) per step, or "all"
    seed: int = 42
    # sampling
    temperature: float = 0.5
    num_samples: int = 20
    length: int = 200       # tokens (characters) to generate in continuous-text mode


# Part II's faster versions of Part I's functions: True uses them, False runs Part I alone
# (same numbers to rounding, about 14 times slower; `python microgpt.py --plain` does that,
# and so lets a debugger step through the code of Part I). The switch covers every idea of
# Part II that computes differently; pausing CPython's cycle collector (its occasional
# search for unused objects, II.3) changes no arithmetic and happens either way.
FAST = True


# =======================================================================================
# PART I. THE ALGORITHM
#
# Seven sections, in the order a GPT needs them. Every operation on numbers that need a
# gradient is one node of a graph (section 3): one per +, *, **, exp, log and relu, as in Andrej
# Karpathy's original 200-line microgpt, from which this file grew. Where Part II has a
# faster version of a function, the function's first line hands over to it
# (`if FAST: return fast_...`); read past that line for the math.
# =======================================================================================

# ---------------------------------------------------------------------------------------
# 1. Dataset
#
# A language model learns from examples of text. Here each example ("document") is one line
# of a text file: by default names.txt, which comes with this file and holds 29,910 first
# names, one per line (every name given to at least 5 babies in the US in 2017, from the
# Social Security Administration's counts; README.md says how it was made). We shuffle them
# with the seed, so runs are reproducible, and hold some back: the validation set, 10% of
# the names but at most 1,000 (for names.txt's 29,910 names that is 1,000, about 3%).
# The model never trains on those, so its loss on them (how badly it predicts them, section
# 6) tells us whether it learned the patterns of names in general or merely memorised the
# ones it saw.
# ---------------------------------------------------------------------------------------

def read_text(path):
    """The whole content of a UTF-8 text file. (Part VI's read_data_file adds the checks a
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
# token can do both jobs because the roles never clash: as an input BOS always means "a name
# starts here", as a target always "the name ends here". names.txt holds only the 26
# lower-case letters, so a is 0, b is 1, ..., z is 25 and BOS is 26: "emma" becomes [26, 4,
# 12, 12, 0, 26]. Real GPTs use tokens of several characters, but the idea is the same.
# (Part III's stream mode reads a text as one stream, with no BOS: its vocabulary is just
# len(chars) tokens.)
# ---------------------------------------------------------------------------------------

def build_vocab(text):
    """The sorted list of distinct characters; token id i stands for chars[i]."""
    return sorted(set(text))


def encode(text, chars):
    """Characters to token ids."""
    if getattr(chars, "merges", None): return chars.encode(text)   # Part IV's longer tokens, if learned
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
# the derivative of the loss with respect to each parameter. A Value holds one number, the
# Values it was computed from (its children), and the local derivative of itself with
# respect to each child. The names come from drawing the graph with the loss at the top and
# the parameters at the bottom: a Value's children (its inputs) sit below it, and the Values
# computed from it (its parents) above. A Value used twice has two parents, so this is a
# graph rather than a tree. backward() then applies the chain rule from the loss back to
# the parameters: each node passes its gradient to its children, multiplied by the local
# derivative, and a child used several times adds up what it gets.
#
# Why add: if x is used twice, in u and in v, then nudging x by a tiny h moves u and v
# both, and the loss moves by the sum of the two effects (for tiny changes, effects add
# up): dL/dx = dL/du * du/dx + dL/dv * dv/dx, one share per use.
# ---------------------------------------------------------------------------------------

class Value:
    """One number in the computation graph, with its gradient."""
    # Two Python details, not part of the algorithm. __slots__ fixes the attributes a Value
    # can have, so it needs no dict of its own: the many Values of a graph take less memory
    # and time. `tape` and the two lines in __init__ that use it serve Part II (II.2, "The
    # tape"); skip them on a first reading: while Value.tape is None they do nothing.
    __slots__ = ("data", "grad", "_children", "_local_grads")
    tape = None

    def __init__(self, data, children=(), local_grads=()):
        self.data = data                  # the number itself
        self.grad = 0.0                   # d(loss)/d(this number), filled in by backward()
        self._children = children         # the Values this one was computed from
        self._local_grads = local_grads   # d(this)/d(child), one per child
        if Value.tape is not None:        # Part II, "The tape"
            Value.tape.append(self)

    # Python turns `a + b` into the call a.__add__(b), `a * b` into a.__mul__(b) and `a ** k`
    # into a.__pow__(k) (operator overloading): by defining these methods, formulas on Values
    # read like formulas on numbers, and each operation builds one node. Each computes its
    # result and, right beside it, its local derivatives. With two inputs, a local
    # derivative says how the result moves when one input moves and the other is held
    # fixed: nudge a by h in a * b and the product moves by h * b, so d(a*b)/da = b.
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

    # The rest are built from the operations above. The __r...__ ("reflected") versions run
    # when the plain number is on the left, as in 2 * v or 0 + v: Python first tries the
    # number's own method, (2).__mul__(v), which does not know Values and says so
    # (NotImplemented), and then calls v.__rmul__(2).
    def __neg__(self):
        return self * -1.0

    def __sub__(self, other):
        return self + (-other)

    def __truediv__(self, other):
        return self * other ** -1

    def __radd__(self, other):            # other + self: so sum(values), which starts from
        return self + other               # 0 + v, works (that 0 + v is one node more)

    def __rsub__(self, other):
        return (-self) + other

    def __rmul__(self, other):
        return self * other

    def __rtruediv__(self, other):
        return self ** -1 * other

    # float(v) calls v.__float__() and gives v's number. Evaluation and sampling (sections 6
    # and 7) read numbers with float(), so that they work both on Values and on plain floats
    # (float(x) is x): Part II runs them on plain floats, which is faster.
    def __float__(self):
        return self.data

    def backward(self):
        """For every Value that this one depends on, add d(self)/d(that Value) to its .grad.
        Gradients add up over calls on separate graphs, so that a batch of documents can pass
        through one at a time; Adam sets them back to 0 after each step (section 6). Call it
        once per graph (the comment after the loop says why)."""
        # A node may pass its gradient on only once it holds all of it, that is, once every
        # node that uses it has passed on its share. Visiting in the wrong order gives wrong
        # gradients: with u = 2 * x, v = 3 * u and L = u + v, dL/du = 1 + 3 = 4 and so
        # dL/dx = 8. The right order here is L, v, u. Visit in the order L, u, v instead:
        # L gives u 1 and v 1; u, holding only that 1, hands x 2 * 1 = 2; then v gives u its
        # 3, but u has already passed on its gradient, so that 3 never reaches x, and x ends
        # with 2 instead of 8.
        # A topological order lists every node after all of the nodes it was computed from;
        # we visit the nodes in its reverse, so that every node comes before its children.
        # The order leaves out the leaves (the parameters, and any Value created directly
        # from a number, like Value(0.0)): they have no children to pass a gradient on to.
        # They still get theirs: their parents add it to their .grad (child.grad below).
        self.grad = 1.0
        for node in reversed(self.topological_order()):
            for child, local in zip(node._children, node._local_grads):
                child.grad += local * node.grad   # the chain rule; a child used twice adds both
        # Why once per graph: the loop only adds to .grad, never clears it, so a second call
        # on the same graph would hand every inner node's old gradient down again. For
        # x -> u = x * 2 -> L = u * 3, a first call gives u.grad 3 and x.grad 6. A second
        # call sets L.grad to 1 again, and L passes u 3 * 1 = 3 again, but u.grad still
        # holds the first 3 and becomes 3 + 3 = 6, and all 6 is passed on: x gets
        # 2 * 6 = 12 more and ends at 18, not at the 6 + 6 = 12 that two correct gradients
        # would add up to.

    def topological_order(self):
        """This node and every node it depends on that has children, each after its children."""
        # The idea, as the original microgpt writes it, recursively:
        #     def build(node):
        #         if node not in visited:
        #             visited.add(node)
        #             for child in node._children: build(child)
        #             order.append(node)        # after all of its children
        # But Python limits recursion to about 1,000 calls deep, and a graph can be deeper:
        # a 6-letter name's graph is about 260 nodes deep (its longest chain from the loss
        # down to a parameter) in the default model, about 820 with n_layer 4, about 1,430
        # with n_embd 64 and 2 layers. (A wider model is deeper too: sum() adds its terms
        # one at a time, starting from 0, so a sum over 64 inputs, as in section 5's
        # linear(), is a chain of + nodes 64 deep.) So we do the same with a to-do list of
        # our own, a stack (last in, first out), holding two kinds of entries: (n, False),
        # "expand n", which is the call build(n), and (n, True), "a reminder to place n",
        # which is the line order.append(node). Popping an expand entry pushes n's reminder
        # and, on top of it, an expand entry for each child that has children of its own and
        # is not yet expanded, so the reminder comes off only after all of its children's
        # work. A node with two parents can be pushed twice before it is expanded; whichever
        # copy comes off second finds it expanded already and is skipped. Here it is for
        # L = u + v with u = 2 * x, v = 3 * u (x is a leaf, never pushed, and the
        # plain numbers 2 and 3 get no node; F is False, T is True). The stack's top is on
        # the right, and each line pops the top entry:
        #     pop       what happens                      stack after          order
        #     (L, F)    expand L: reminder, children      (L,T) (u,F) (v,F)
        #     (v, F)    expand v: reminder, u (again)     (L,T) (u,F) (v,T) (u,F)
        #     (u, F)    expand u: reminder only (x leaf)  (L,T) (u,F) (v,T) (u,T)
        #     (u, T)    reminder: place u                 (L,T) (u,F) (v,T)    u
        #     (v, T)    reminder: place v                 (L,T) (u,F)          u v
        #     (u, F)    u was expanded already: skip      (L,T)                u v
        #     (L, T)    reminder: place L                                      u v L
        # Reading it: L's children u and v were pushed in that order, so v came off first
        # (the stack takes children in the opposite order, which does not matter: any order
        # with every node after its children will do). Expanding v pushed u's entries on top
        # of v's reminder, so (v, T) came off only after u was placed. That holds for every
        # node: its reminder comes back only when the work for its children, and theirs, is
        # done, so each node is placed after its children. u was pushed twice, by L and by
        # v; the copy L pushed, which lay under v's entries, came off second and was skipped
        # (the table's sixth line; the check is `elif node not in visited`).
        order, visited, stack = [], set(), [(self, False)]
        while stack:
            node, is_reminder = stack.pop()
            if is_reminder:                 # its children were placed before it came off
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
# (a Gaussian with standard deviation config.init_std, 0.08).
# Small, so that the first predictions are close to uniform rather than confidently wrong.
# Random, so that different parts of the model learn different things. If every weight
# started at the same value, every vector the model computes would hold 16 equal numbers
# (64 in the MLP's middle), each computed alike, from the same inputs with the same
# weights. The gradients would be just as alike, so every update would change the weights
# alike, and the numbers would stay equal: the symmetry would never break. Training could
# still make different tokens' vectors differ from each other: each token's row of wte
# (each position's of wpe, each output's of lm_head) gets its own gradient, from the
# examples where that token appears. But the symmetry is between the 16 numbers of a
# vector, not between tokens: the 16 numbers within any one row are used alike, get the
# same gradient and stay equal, and the 16-wide model computes like a model of width 1.
# All zeros would be worse still: nothing would ever move, by a chain of three steps:
#   (1) every vector would be 0: the embeddings, and all computed from them (the model
#       only adds, multiplies and rescales, with no constants of its own; rmsnorm, section
#       5, divides by sqrt(mean + 1e-5), so 0 stays 0; attention's probabilities (its
#       softmax, section 5) are not 0, but they average values that are);
#   (2) so lm_head, the last matrix, which turns the final vector into scores, gets a
#       gradient of 0: its gradient is the final vector times the gradient arriving at
#       the scores (d(w * x)/dw = x, section 3), and that arriving gradient is not 0, but
#       the vector is, so the product is 0;
#   (3) and every other parameter gets its gradient through lm_head, times lm_head's
#       weights, which are 0.
# So nothing would ever move.
#
# Three words used from here on. An embedding is a table with one learned vector per
# token (or per position): looking a token up gives the row the model uses for it, n_embd
# numbers it tunes in training. A projection is a matrix that turns one vector into
# another (linear(), section 5): attention makes its query, key and value from the same
# vector with three of them. An MLP (multi-layer perceptron) is the classic small neural
# network: a projection to a wider vector, a non-linearity (a function that is not a
# weighted sum, here ReLU, section 5), a projection back.
# ---------------------------------------------------------------------------------------

def param_shapes(config, vocab_size):
    """Name -> (rows, columns) of every weight matrix. There are no biases (learned numbers
    added after a matrix product, which most networks, GPT-2 among them, have: Part IV)."""
    e = config.n_embd
    shapes = {
        "wte": (vocab_size, e),                 # weights, token embedding: one vector per token
        "wpe": (config.block_size, e),          # weights, position embedding: one per position
        "lm_head": (vocab_size, e),             # turns the final vector into one score per token
    }
    for i in range(config.n_layer):
        for name in ("attn_wq", "attn_wk", "attn_wv", "attn_wo"):
            shapes[f"layer{i}.{name}"] = (e, e)    # query, key, value and output projections
        # The MLP widens to 4 * n_embd and comes back: a convention of the original
        # Transformer and GPT-2, not a law. The wide middle gives each position room to
        # compute many intermediate numbers at once; it holds 2/3 of a layer's parameters.
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
# Attention, the whole of it, in five steps (the code: the loop over heads in gpt(),
# attention_weights and attention_head):
#   1. Project. From the current vector x, three projections make a query q (what this
#      position looks for), a key k (what it offers) and a value v (what it passes on).
#      Every earlier position made its own k and v the same way; the key/value cache
#      (below) keeps them.
#   2. Slice into heads. With n_embd 16 and 4 heads, head 0 uses numbers 0-3 of q, of
#      every k and of every v, head 1 numbers 4-7, and so on: each head has a query and
#      keys of its own, so each can look for something different.
#   3. Score. Each head scores every position so far (this one too) by how well that
#      position's key matches its query: a dot product (q . k = sum_i q[i] * k[i], large
#      when the two point the same way), scaled (why: attention_weights).
#   4. Average. Softmax turns the scores into weights that sum to 1, and the head outputs
#      the weighted average of those positions' values.
#   5. Mix. The heads' outputs, side by side, go through one more projection, attn_wo:
#      each head wrote only its own slice, and attn_wo lets every number draw on all heads.
#
# Attention and the MLP each add their output to the vector they read, instead of
# replacing it: a residual connection. So x is a running sum, often called the residual
# stream, that each of them reads and adds a correction to.
#
# gpt() is called once per position, with that position's token; what it needs from the
# earlier positions travels in the key/value cache. Training on "emma" makes five calls:
#     position  0    1    2    3    4
#     reads     BOS  e    m    m    a        (the cache then holds this and every earlier one)
#     predicts  e    m    m    a    BOS      (the target: the next token of the document)
#
# This is GPT-2's design, simplified as in the original microgpt; Part IV names each
# difference and then runs GPT-2 itself with the same few functions.
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
    Keeps the numbers from growing or shrinking layer after layer. The 1e-5
    keeps it from dividing by zero when x is all zeros; otherwise it is too small to matter."""
    if FAST: return fast_rmsnorm(x)
    scale = (sum(xi * xi for xi in x) / len(x) + 1e-5) ** -0.5
    return [xi * scale for xi in x]


def mlp(x, w1, w2):
    """The MLP block: widen, ReLU, narrow.   [n_embd] -> [4 * n_embd] -> [n_embd]
    ReLU (max(0, y)) is the non-linearity that lets it compute more than weighted sums:
    without it, two linear layers in a row would be just one linear layer (one matrix,
    their product)."""
    if FAST: return fast_mlp(x, w1, w2)
    hidden = [h.relu() for h in linear(x, w1)]
    return linear(hidden, w2)


def attention_weights(q, ks):
    """How much the current position attends to each position so far:
    softmax over t of q . k[t] / sqrt(head_dim).   q: [head_dim], ks: [t][head_dim] -> [t]"""
    # Why divide by sqrt(head_dim): if q and k hold d numbers with random signs, q . k is a
    # sum of d products that partly cancel, so it grows like sqrt(d) times one product, not
    # d times. (Statistics' reason: the variance of a random quantity, its average squared
    # size, adds up over independent terms. The sum's variance is d times one product's, so
    # its typical size, the square root of that, is sqrt(d) times one product's.)
    # Dividing by sqrt(d) makes the scores' size independent of the head size. Otherwise a
    # bigger head would make the scores far apart, and softmax would give nearly all the
    # weight to the single best score and almost none to the rest (and almost no gradient:
    # a probability pinned near 0 or 1 barely moves when its score moves).
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
    earlier position (values likewise). So gpt() must be called for positions 0, 1, 2, ... in
    order, starting from empty lists. This call appends its own, so the next position can
    attend to this one, and nothing is computed twice. attention_log, if given (for looking
    inside, Part III), collects each head's attention weights (computed a second time, just
    for the log)."""
    hd = config.n_embd // config.n_head                 # the head size, head_dim
    # The token says what, the position says where; the sum carries both (training shapes
    # the two tables so that later layers can still read both the token and the position
    # from the sum: 16 numbers leave room for that).
    x = [t + p for t, p in zip(params["wte"][token], params["wpe"][pos])]   # [n_embd]
    # Normalised here, this vector starts the residual stream (section 5's introduction) at
    # the same size for every token.
    x = rmsnorm(x)
    for i in range(config.n_layer):
        # Attention block: gather information from earlier positions.
        residual = x        # the stream as it is, to add the block's output to below
        # The stream grows as blocks add to it, so the block normalises what it reads: only
        # this copy, not the stream. In the first block this changes almost nothing (x was
        # just normalised); it is there because every block runs the same code.
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
        x = linear(heads, params[f"layer{i}.attn_wo"])  # [n_embd]: mixes the heads' outputs
        # The residual connection adds the block's output to its input, so each block only
        # has to learn a correction, and gradients flow straight back through the sum (its
        # local derivatives are 1), so even the first blocks of a deep stack learn.
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
# letters and BOS) has loss ln(27) = 3.30, and that is about where training starts, as the
# small random weights of section 4 make the first predictions nearly uniform; a model that
# always gives the right token probability 1 has loss 0. Each step takes one document (or a
# batch), computes its mean loss over its positions, gets every parameter's gradient with
# backward(), and moves each parameter a little downhill.
#
# The simplest downhill move is plain gradient descent: for every parameter p,
#     p.data -= lr * p.grad
# a small step (lr, the learning rate) against its gradient, the direction in which the
# loss grows. It works, but one lr must suit every parameter, large gradients and small.
# Adam (adam_update below) is that same step with two refinements: it follows a running
# average of the gradient instead of one noisy step's, and divides by the gradient's
# typical size, so that every parameter moves by about lr.
#
# One document's loss is noisy: some names are easy to predict, some hard, and a short one
# has few predictions to average over. So the loss jumps from step to step, and the
# command line (Part VI) prints its mean over the last 100 steps ("smoothed") beside it.
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
    (18 tokens with its two BOS, so 17 predictions) loses its closing BOS, and a longer one
    its last letters too: the model never learns where such a name stops."""
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


def document_batches(seqs, batch):
    """Returns a function, batch_for_step, that train() calls to get a step's batch: step ->
    a list of token sequences. For documents (seqs: each one encoded, as encode_document
    gives it): the training documents in order, `batch` at a time ("all": every one of them
    at every step); after the last one, it starts again from the first, in the same order.
    The default 1000 steps of one name each see only 1,000 of the 28,910 training names: the
    model learns what names have in common from a small sample, not the list by heart."""
    if batch == "all":
        return lambda step: seqs            # lambda makes a small function on the spot
    return lambda step: [seqs[(step * batch + b) % len(seqs)] for b in range(batch)]


def adam_update(flat_params, m, v, step, num_steps, config):
    """One step of Adam on every parameter, then reset the gradients for the next step. m
    and v are running averages of each gradient and of its square (Adam's names: this v has
    nothing to do with attention's values v). The step follows the average direction m,
    divided by sqrt(v), the gradient's typical size: so every parameter moves by about the
    learning rate, whatever the scale of its own gradient, and less where its gradient keeps
    changing sign (then the signs cancel in m, but not in v, which averages squares)."""
    lr = config.lr * (1 - step / num_steps)          # decays linearly (lr / num_steps at the end)
    b1, b2 = config.beta1, config.beta2
    # m and v start at 0, so early on they are too small. With b1 = 0.85 and a gradient g
    # that stays the same, m is 0.15 g after one step, 0.85 * 0.15 g + 0.15 g = 0.2775 g
    # after two, 0.3859 g after three: (1 - 0.85**t) g after t steps (t = step + 1), as
    # the sum (1 - b1) * (1 + b1 + ... + b1**(t-1)) is 1 - b1**t. Dividing m by 1 - b1**t
    # gives exactly g; the same argument with b2 holds for v, the average of g * g.
    bias1 = 1 - b1 ** (step + 1)
    bias2 = 1 - b2 ** (step + 1)
    c1, c2, eps = 1 - b1, 1 - b2, config.eps         # looked up once, not once per parameter
    for i, p in enumerate(flat_params):
        g = p.grad
        m[i] = b1 * m[i] + c1 * g
        v[i] = b2 * v[i] + c2 * g * g
        p.data -= lr * (m[i] / bias1) / ((v[i] / bias2) ** 0.5 + eps)
        p.grad = 0.0


def train(params, config, batch_for_step, num_steps, adam=None):
    """Train with Adam up to step num_steps, yielding each step's loss (the batch's mean of
    its documents' losses, measured before that step's update) as it goes. batch_for_step(step)
    gives the token sequences to learn from at that step. This is a generator (it says yield,
    not return): nothing runs until the caller loops over it, as in `for loss in train(...)`,
    and each turn of that loop runs one step. Adam starts fresh, unless `adam` gives its state
    (a dict with keys "m", "v" and "step", kept up to date as training goes, so that Part VI
    can save it and go on later from that step)."""
    flat = flatten(params)
    # Adam's averages (adam_update), one per parameter, and the next step to take
    adam = adam or {"m": [0.0] * len(flat), "v": [0.0] * len(flat), "step": 0}
    m, v = adam["m"], adam["v"]
    for step in range(adam["step"], num_steps):
        batch = batch_for_step(step)
        loss = 0.0
        # The gradient of the batch's mean loss is the mean of the documents' gradients, so
        # each document adds its share to p.grad in turn, and its graph is freed (nothing
        # refers to it once add_gradient returns) before the next one is built: memory holds
        # one document's graph, whatever the batch size.
        for tokens in batch:
            loss += add_gradient(tokens, params, config, 1 / len(batch))
        adam_update(flat, m, v, step, num_steps, config)
        adam["step"] = step + 1
        yield loss / len(batch)


def mean_token_loss(sequences, weights, config):
    """Mean cross-entropy per predicted token over some sequences: the validation loss.
    weights: the parameters as they are, or the same numbers as plain floats, which is
    faster and what inference_weights() (section 7) gives; float() reads a number from both.
    It is not the same kind of number as the smoothed training loss the command line prints
    beside it. The two differ in four ways:
      - averaging. Training: a mean of per-document means, so each document counts the same
        and a short name's few tokens weigh more. Validation: every token counts the same.
      - weights. Training: the smoothed loss mixes the last 100 steps, each measured with
        that step's weights. Validation: the final weights only.
      - timing. Training: each loss measured just before the step that learns from it.
        Validation: after all training.
      - data. Training: training documents. Validation: held-out ones."""
    losses = [float(loss) for tokens in sequences for loss in sequence_losses(tokens, weights, config)]
    return sum(losses) / len(losses)


# ---------------------------------------------------------------------------------------
# 7. Sampling
#
# To write a new name, feed BOS, turn the logits into probabilities, draw a token, feed it
# back in, and repeat until the model draws BOS (the end of the name) or the context is full.
# The temperature divides the logits first: below 1 it sharpens the distribution (safer,
# more typical names), above 1 it flattens it (more surprising ones). As it approaches 0,
# all the probability goes to the likeliest token, so temperature 0 means exactly that:
# take the likeliest token ("greedy"), with no division at all. A name the model never
# ends stops at block_size letters (16 by default). Position 0 reads BOS and draws letter 1;
# position p reads letter p and draws letter p + 1. So the last position, 15, draws letter
# 16, which is kept though no position is left to read it.
# ---------------------------------------------------------------------------------------

def inference_weights(params):
    """The weights to run the model with when no gradient is needed (evaluation, sampling).
    Part I keeps the Values (each run builds a graph that is never used); Part II passes
    plain floats (weights_of copies each Value's number), which build none. The functions
    below take either, and float() reads the number out of both."""
    if FAST: return weights_of(params)
    return params


def sample_token(logits, temperature, rng):
    """Draw a token id with probabilities softmax(logits / temperature); at temperature 0,
    the likeliest one (the lowest id of a tie, since max() keeps the first it finds)."""
    if temperature == 0: return max(range(len(logits)), key=lambda t: float(logits[t]))
    # Subtract the largest logit before dividing by the temperature: that changes no
    # probability, and keeps a tiny temperature from blowing the logits up to infinity.
    m = max(float(l) for l in logits)
    probs = softmax([(l - m) / temperature for l in logits])
    return rng.choices(range(len(probs)), weights=[float(p) for p in probs])[0]


def sample_document(weights, config, chars, rng, temperature, prompt="", ids=False):
    """One new document, starting with `prompt`. weights: from inference_weights(). ids:
    return its token ids instead of its text (the report page shades the very tokens drawn:
    with --bpe, encoding the text again may cut it into other tokens, Part IV)."""
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
        tokens.append(token)      # and read at the next position: the model reads what it wrote
    return tokens[1:] if ids else decode(tokens[1:], chars)


# That is the whole algorithm: the summary at the top of the file puts these pieces
# together. Everything below builds on it: efficiency (Part II), ways to look inside
# (Part III), GPT-2 (Part IV), an assistant (Part V), and the plumbing (Part VI).


# =======================================================================================
# PART II. MAKING IT FAST
#
# Part I is the algorithm; as the original microgpt puts it, everything else is just
# efficiency (and, here, tools to look inside and plumbing). This part makes the same
# computation cheaper without changing what it computes: each fast_ function here replaces
# one of Part I's (the other functions are their helpers and the collector switch). Four
# ideas, in sections II.1 to II.4 (numbered apart from Part I's 1 to 7):
#
#   1. Fused nodes: one graph node for a whole sum, softmax or loss, with its derivative
#      worked out by hand, instead of one node per + and *; and none at all for the MLP's
#      switched-off units (those whose ReLU outputs 0).
#   2. The tape: backward() walks a list of the nodes recorded as they were made, instead
#      of searching the graph for an order.
#   3. The collector switch: CPython's cycle collector is paused for the whole run.
#   4. Plain floats: when no gradient is needed (validation, sampling), no graph at all.
#
# Only the time changes. Leaving out the switched-off units and pausing the collector change
# no bit. The fused sums and the tape can change the last bit: they add the same terms (the
# parts of a sum, the shares of a gradient) in another order; a few fused steps compute the
# same math by another formula (dividing where Part I multiplies by an inverse); and from
# Python 3.12 on, sum() of plain floats rounds more exactly than adding one at a time. So
# results agree to floating-point rounding (differences of 1e-16 to 1e-15), and the default
# run prints exactly the same numbers either way. Together they make a training step 12 to
# 16 times faster than Part I alone on CPython 3.11, and 8 to 12 times faster on PyPy 3.9
# (each ratio from two runs timed side by side, with the collector paused in both on
# CPython; PyPy keeps it on: II.3).
# They make it 25 to 28 times faster than a textbook engine like micrograd's on CPython
# (micrograd: Karpathy's earlier tiny autograd, one node per + and *, as in Part I, with a
# recursive topological sort).
#
# Each section ends with two notes a first reading can skip. "Measured": what the idea
# buys, by `python scripts/bench.py` (it alternates the variants, 50 steps at a time, over
# the first 200 steps of the default run, on a shared 2-core machine; README.md has all
# the figures). "Tested": where the tests check that it changes no number (each function
# against its Part I version to 1e-9, and against central finite differences: the slope
# (f(x + h) - f(x - h)) / 2h measured by nudging each input, no calculus involved).
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
# The fast_ functions of the forward pass below also accept plain floats and then build no
# graph at all (idea 4): that is how evaluation and sampling run without Values.
#
# sum(map(mul, a, b)) below is sum(x * y for x, y in zip(a, b)), but faster: map calls
# operator.mul on the pairs without a Python loop.
#
# Measured: the first training step of the default run (the name "evania", 7
# predictions, with the run's starting weights, which decide how many MLP units are on)
# builds 54,342 nodes with 105,665 edges (child links) in Part I (every node made, also
# the 364 that compute probabilities no loss uses: two nodes, a power and a product, for
# each of the 26 tokens that are not the target, at each of the 7 positions: 2 x 26 x 7),
# and 1,879 nodes with 37,172 edges with fused nodes.
# With the tape of II.2 under both, the fused graph makes a step 9 to 13 times faster
# than Part I's on CPython, 4.5 to 6 times on PyPy.
# Tested: tests/test_autograd.py (TestFusedNodes) checks every fast_ function against its
# Part I graph, values and gradients to 1e-9, and against central finite differences;
# tests/test_model.py checks the whole model's gradient, and a few training steps with
# FAST on and off (losses, gradients and weights to 1e-9).
# ---------------------------------------------------------------------------------------

from operator import mul


def is_graph(vector):
    """True for a list of Values (build a graph), False for a list of plain floats."""
    return isinstance(vector[0], Value)


def dot(a, b, scale=1.0):
    """One node for scale * sum_i a[i] * b[i], where a and b are lists of Values.
    d/d a[i] = scale * b[i]   and   d/d b[i] = scale * a[i]."""
    ad = [v.data for v in a]
    bd = [v.data for v in b]
    # a and b are lists, so a + b joins them: the node's children. The third argument joins
    # their local derivatives in the same order: b's numbers for a's Values, then a's for b's.
    return Value(sum(map(mul, ad, bd)) * scale, a + b,
                 [x * scale for x in bd] + [x * scale for x in ad])


def fast_linear(x, w):
    """linear() with one dot-product node per output instead of 2 * n_in nodes."""
    if not is_graph(x):
        return [sum(map(mul, row, x)) for row in w]
    # dot(row, x) for every row, written out so that x's numbers are read once for all rows.
    # row + x joins the two lists: the node's children, then xd + rd their local derivatives,
    # crosswise: d(w . x)/d w[j] = x[j] and d(w . x)/d x[j] = w[j].
    xd = [xi.data for xi in x]
    out = []
    for row in w:
        rd = [wi.data for wi in row]
        out.append(Value(sum(map(mul, rd, xd)), row + x, xd + rd))
    return out


def fast_softmax(logits):
    """softmax() with one node per output instead of five per input. Part I's __truediv__
    turns e / total into e * total**-1, so each division makes its own total**-1 node; the
    five are l - m, exp, the sum's +, total**-1 and e * total**-1.
    Its derivatives, with e[i] = exp(l[i]), S = sum_j e[j] and p[i] = e[i] / S. The
    derivative of exp is exp, so d e[j] / d l[j] = e[j], and S, which holds e[j], moves too.
      j == i: both the top and the bottom of e[i] / S move, and the quotient rule gives
              d p[i] / d l[i] = (e[i] * S - e[i] * e[i]) / S**2 = p[i] - p[i] * p[i].
      j != i: only the bottom moves: d p[i] / d l[j] = -e[i] * e[j] / S**2 = -p[i] * p[j].
    Both cases in one formula: d p[i] / d l[j] = p[i] * ([i == j] - p[j]), where [i == j]
    is 1 if i equals j and 0 if not. In Python, (i == j) is True or False, which count as
    1 and 0 in arithmetic: the code below writes exactly that."""
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
    """rmsnorm() with one node for the scale instead of 2n + 3 (n squares, n additions, the
    division by n, the + 1e-5 and the ** -0.5).
    The scale is s = (m + 1e-5) ** -0.5 with m = sum_i x[i]**2 / n, so by the chain rule
        d s / d x[i] = -0.5 * (m + 1e-5) ** -1.5 * (2 * x[i] / n) = -s**3 * x[i] / n,
    since (m + 1e-5) ** -1.5 is ((m + 1e-5) ** -0.5) ** 3 = s**3."""
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
    and w2's weights for it get no gradient either: their local derivative is the unit's
    output, which is 0. So it gets no node, the second layer skips it, and no number
    changes. About half of the 64 units are off at the start of the default run, and more
    later: over steps 500 to 999 only 17% of them are on. Measured: with every unit in the graph, a
    step of the first 200 took 6% to 27% longer on CPython and 42% to 143% longer on PyPy."""
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
    2 * head_dim + 6 per position for the weights (the dot product's head_dim * and head_dim
    +, one * for the scale, softmax's five) and 2 per position per output for the weighted
    sum (a * and a +).
    The result first: d out[j] / d s[t] = p[t] * (v[t][j] - out[j]), so raising a score
    pulls the output towards that position's value. The derivation (skip it if you like):
    the scores are s[t] = q . k[t] / sqrt(d), each one dot() node. Each output,
    out[j] = sum_u p[u] * v[u][j] with p = softmax(s), is one node whose children are the
    scores and the v[t][j]. Its local derivatives: d out[j] / d v[t][j] = p[t]. A score
    s[t] changes every weight p[u] (softmax divides by a sum over all scores), and each
    p[u] changes out[j], so by the chain rule, adding up the paths through each p[u]:
        d out[j] / d s[t] = sum_u (d out[j] / d p[u]) * (d p[u] / d s[t])
    where d out[j] / d p[u] = v[u][j], and fast_softmax gave d p[u] / d s[t] =
    p[u] * ([u == t] - p[t]). So
        d out[j] / d s[t] = sum_u v[u][j] * p[u] * ([u == t] - p[t])
                          = sum_u v[u][j] * p[u] * [u == t]  -  p[t] * sum_u v[u][j] * p[u]
    In the first sum only the term u = t is not 0: it is v[t][j] * p[t]. The second sum
    is out[j] itself. So
        d out[j] / d s[t] = p[t] * v[t][j] - p[t] * out[j] = p[t] * (v[t][j] - out[j])."""
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
    that underflowed to 0. Its derivative: d log(S) / d l[i] = exp(l[i]) / S = p[i], and
    d l[t] / d l[i] is [i == t] (1 for the target, 0 for the others), so
        d loss / d l[i] = p[i] - [i == t]:
    the predicted probabilities minus the target written as a one-hot vector (1 at the
    target token, 0 elsewhere)."""
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
# graph, with a set of visited nodes and a stack, at every call. But a node is always made
# after its children (it is computed from them), so the order in which the forward pass
# creates the nodes is already a topological order. While Value.tape is a list, every new
# Value appends itself to it (see Value.__init__); backward then walks that list in reverse.
#
# Measured: without the tape a step took 2% to 20% longer on CPython (median 13%, 6 runs)
# and 64% to 118% longer on PyPy (4 runs).
# Tested: tests/test_fast.py (TestTape): the tape lists every node after its children, and
# backward along it gives backward()'s gradients.
# ---------------------------------------------------------------------------------------

def fast_add_gradient(tokens, params, config, weight):
    """add_gradient(), recording the forward pass on a tape for backward."""
    Value.tape = []
    try:
        loss = document_loss(tokens, params, config)
        share = loss * weight                # inside, so that this node is on the tape too
    finally:
        tape, Value.tape = Value.tape, None     # keep the list, and stop recording
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
# CPython frees an object as soon as nothing refers to it any more (reference counting).
# Objects that refer to each other in a loop (a reference cycle) never reach that point,
# so a second mechanism, the cycle collector, scans the objects from time to time to find
# such loops (by default, each time some hundreds of new objects have been made). The
# graph has no reference cycles (a node points only at its children), so CPython frees
# each document's graph by reference counting alone, as soon as the last reference to it
# goes. The collector would only spend time scanning the thousands of new nodes, so
# the command line (main(), Part VI) pauses it for the whole run. On CPython that costs
# nothing here: with no loops there is nothing for it to find (a loop made while it is
# paused would stay in memory until it runs again). Pausing changes no number, so main()
# pauses it with FAST = False too, where the graphs have 29 times more nodes and gain even
# more. PyPy has no reference counting and needs its collector to free the graphs,
# so there it stays on.
#
# Measured: Part I's validation took 32 ms per name with the collector paused and 94 to 162
# ms with it on. With FAST the graphs are 29 times smaller and the gain is too small to see:
# in whole 500-step runs (final validation and samples included) the medians, 9.3 s of CPU
# with it on and 8.8 s paused, differ by less than this machine's noise: the ratio of each
# pair of runs made in turn (on / paused) had a median of 1.00, from 0.89 to 1.38. On PyPy,
# where it stays on, switching it off made a default run take 5.9 s instead of 3.8 s and
# peak at 1.1 GiB of memory instead of 96 MiB.
# Tested: tests/test_fast.py (TestCollectorSwitch): the collector is paused only inside
# the block and always comes back.
# ---------------------------------------------------------------------------------------

import contextlib
import gc
import sys


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
# residual sums in gpt(), works on floats as it is).
#
# Measured: in the benchmark (500 names, 6 runs on CPython, 4 on PyPy) a forward pass was
# 3.2 to 7.2 times faster than with the fused graph on CPython, 2.8 to 4.7 times on PyPy.
# Timed instead on one whole validation (the 1,000 held-out names), floats took 2.8 s
# against 8.1 s with the fused graph on CPython (2.9 times faster), 0.8 s against 4.3 s on
# PyPy (5.4 times), and Part I's graph 32 s. These are single timings from another
# session, not pairs run in turn, and this machine's speed drifts by 20% and more: that is
# why they can fall outside the benchmark's ranges.
# Tested: tests/test_fast.py (TestPlainFloats): validation, the microscope and samples
# agree with Part I.
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
# of block_size + 1 characters (block_size inputs, each with the next one as its target), as
# in the classic demos that learn to write Shakespeare (Karpathy's char-rnn and nanoGPT).
# Sampling slides the window along, so the model always sees the last block_size characters
# and nothing older.
#
# The Markov chain (of stream mode). Because sampling slides that window, the next token
# depends only on the last block_size tokens: once a text is block_size tokens long, the
# model is a Markov chain (a process whose next step depends only on where it is now, its
# state), and its states are the possible full windows. (So the chain leaves out a text's
# first block_size - 1 predictions, made after reading only 1, 2, ..., block_size - 1
# tokens, before the window is full.) For a tiny vocabulary and context we can list every
# state, its next-token probabilities, and the state each token leads to. (There are
# vocab_size ** block_size states: names.txt as a stream has 27 characters, the 26 letters
# and the newline (a stream has no BOS), so 27**16 with the defaults, and the command line
# lists them only when there are at most 256 states.)
#
# The microscope. For one input: what the model predicts at every position, and where each
# attention head looks.
#
# The Markov chain and the microscope, and stream mode's sampling and validation, run the
# model without a gradient, on weights from inference_weights().
# =======================================================================================

import itertools

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
    """Consecutive windows over a held-out stream, so every token is predicted once:
        tokens 0..9, block_size 4 -> [0 1 2 3 4] [4 5 6 7 8] [8 9]
    Each window holds block_size + 1 tokens and the next starts block_size later, so
    neighbours share one token: 4 is only a target in the first window above, only an
    input in the second. Windows start up to len(tokens) - 2, so even the last holds one
    input and its target. The first tokens of each window are predicted from a short
    context, so this loss is a little higher than it would be with a full window behind
    every token."""
    return [tokens[s:s + block_size + 1] for s in range(0, len(tokens) - 1, block_size)]


def logits_at_every_position(tokens, weights, config, attention_log=None):
    """Run the model over a sequence of at most block_size tokens: [len(tokens)][vocab_size]."""
    keys = [[] for _ in range(config.n_layer)]
    values = [[] for _ in range(config.n_layer)]
    return [gpt(t, pos, keys, values, weights, config, attention_log) for pos, t in enumerate(tokens)]


def sample_stream(weights, config, rng, temperature, start_tokens, length):
    """Continue a stream of tokens by `length` tokens, yielding each as soon as it is drawn.
    Once the text is longer than the context, the model sees only the last block_size
    tokens (a sliding window), so nothing older needs to be kept."""
    # Why the whole window is run again for every new token, instead of reusing the key/value
    # cache as sample_document does: once the window slides, every token in it sits one
    # position earlier, so its position embedding, and with it every cached key and value,
    # changes. That reason alone is enough. With two layers or more there is a second. Say
    # the window [a b c d] becomes [b c d e]. b's second-layer key was computed from b's
    # first-layer output, which attended to a; a is gone now, so that key is stale too.
    window = list(start_tokens)[-config.block_size:]
    for _ in range(length):
        logits = logits_at_every_position(window, weights, config)[-1]
        token = sample_token(logits, temperature, rng)
        window = (window + [token])[-config.block_size:]
        yield token


# The Markov chain and the microscope

def markov_chain(weights, config, vocab_size):
    """Every full context (a tuple of block_size token ids) with its next-token
    probabilities: [(state, probs)]. Reading token t in state s leads to s[1:] + (t,). The
    probabilities are the model's own, at temperature 1; sampling at another temperature
    reshapes each state's probabilities the same way. The predictions made while the window
    is not yet full (for the first block_size - 1 tokens of a text) are not covered by any
    state in this list."""
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


# =======================================================================================
# PART IV. FROM MICROGPT TO GPT-2
#
# OpenAI's GPT-2 is Part I's model, larger and trained on 40 GB of web text, with a few
# changes, each small. IV.1 is its tokenizer (byte-level BPE), IV.2 its forward pass as its
# differences from gpt(). Reading its weights (safetensors) and downloading them are
# plumbing, in Part VI. Try: python microgpt.py --gpt2 gpt2 --prompt "Alan Turing"
# =======================================================================================

# ---------------------------------------------------------------------------------------
# IV.1 Tokens bigger than letters: byte-level BPE
#
# Part I gives every character a token of its own. GPT-2's tokens are mostly pieces of
# words: " the", "ing", " tokenizer" is [" token", "izer"]. A text then takes fewer tokens,
# so the same context holds more of it, and the model spends its predictions on words rather
# than on spelling. Byte pair encoding (BPE) learns such pieces from a text: count every
# pair of adjacent tokens, merge the most common pair into one new token, and repeat. The
# merges, in the order they were learned, are the tokenizer: to encode a word, start from
# its characters and replay the merges in that order, each wherever its pair occurs. (bpe()
# below does the same another way; its docstring shows the two agree whenever each token
# is made by only one merge (not "abc" both as a + bc and as ab + c), as is true of
# learn_merges's merges and of GPT-2's.)
# Decoding joins the tokens' strings (for GPT-2, whose tokens are made of bytes, one more
# step turns the joined characters back into bytes: see "Bytes, not characters" below).
#
# Words first. Before any merging, GPT-2 cuts a text into words (each with its leading
# space), numbers, runs of other symbols and runs of white space, and merges never cross
# those edges: a word is then encoded the same wherever it stands (" dog" in " dog." and
# in " dog!"), and learning counts each distinct word once, with its frequency.
#
# Bytes, not characters. GPT-2 starts from the 256 values of a byte and encodes a text's
# UTF-8 bytes, so no text holds an unknown token: an emoji is a few bytes, which merges
# may or may not join. GPT-2's tokenizer comes as two text files: vocab.json maps each
# token to its id, and merges.txt lists the 50,000 merges in learned order, one a line
# (after a first line that names its version), its two halves separated by a space. A raw
# byte cannot stand in such a file: a space, a newline or a control byte is invisible, or
# would break a line of merges.txt in the wrong place. So each byte is written as a visible
# stand-in character (bytes_to_unicode: " the" is written "Ġthe"). 188 of the 256 bytes are
# printable as the character of the same number (Latin-1: byte 33 is "!", byte 233 is "é")
# and stand for themselves; the other 68 get stand-ins. So a one-byte token has three faces,
# which are easy to mix up: its byte value, its stand-in, and its id, vocab.json's number
# for it:
#     byte    stand-in   id
#      33     !            0
#      60     <           27
#       0     Ā          188
#      32     Ġ          220
# vocab.json gives ids 0 to 187 to the 188 printable bytes, in byte order: bytes 33 to 126
# get ids 0 to 93 (id = byte - 33: "!" 0, "<" 27), and bytes 161 to 172 and 174 to 255 (12
# + 82 = 94 bytes) get ids 94 to 187. The other 68 bytes (0 to 32, 127 to 160 and 173) get
# the stand-ins U+0100, U+0101, ... and ids 188 to 255, again in byte order: byte 0 is Ā
# and id 188, and byte 32, the space, is Ġ and id 220.
# A merged token's id is 256 plus its merge's rank (its place in merges.txt, counting
# from 0), so the 50,000 merges take ids 256 to 50255; the next, 50256, is <|endoftext|>,
# the token GPT-2 saw between its training documents.
#
# Try it on names: `python microgpt.py --bpe N` learns N merges from the training text
# (in names mode the names, one at a time; in stream mode the whole stream), and then
# trains Part I's model on those tokens instead of single characters. The text is cut
# into words as GPT-2 does (below), but each word starts as characters, not bytes.
# ---------------------------------------------------------------------------------------

import collections
import functools
import heapq
import re
import unicodedata

GPT2_EOT = 50256    # <|endoftext|>


def merge_pair(word, pair):
    """A word (a list of tokens) with every occurrence of pair, left to right, made one token."""
    out, i = [], 0
    while i < len(word):
        if i + 1 < len(word) and word[i] == pair[0] and word[i + 1] == pair[1]:
            out.append(pair[0] + pair[1])
            i += 2
        else:
            out.append(word[i])
            i += 1
    return out


def learn_merges(words, num_merges, progress=None):
    """Learn up to num_merges merges from a list of words (strings: a merge never joins the
    end of one word to the start of the next). Each round merges the pair of adjacent
    tokens that occurs most often; among pairs that occur equally often, the one that sorts
    first. Returns [(left, right)], in learned order. progress, if given, is called with
    the number of merges learned after each one (the command line says how far it got)."""
    # Each distinct word is kept once, with its count, and merging a pair recounts only the
    # words that hold it: learning 200 merges on names.txt then takes a second, not
    # minutes. pairs[p] is how often p occurs over all the words; holders[p] the words that
    # hold p (and perhaps some that held it before an earlier merge: see below). Each round
    # merges the most frequent pair, best: for each word in holders[best], subtract the
    # counts of all its pairs, merge, add the counts of all the merged word's pairs (most
    # are the same pairs again). A merged word keeps no copy of best (merge_pair merges
    # every copy, left to right), so pairs[best] falls to 0, and is deleted. holders is
    # never cleaned (only best's own entry is taken out, by holders.pop(best) in the loop
    # below), so holders[p] may list a word that no longer holds p (an earlier merge took
    # it apart). That is harmless: if p later becomes best, the loop visits that word,
    # subtracts its pairs' counts, merge_pair finds no p and returns it unchanged, and the
    # same counts are added back.
    # Traced on "ana", "ana", "an": the words are [a, n, a] (count 2) and [a, n] (count 1),
    # pairs {(a, n): 3, (n, a): 2}. Merge 1 is (a, n): both words hold it. [a, n, a]
    # subtracts (a, n) 2 and (n, a) 2, becomes [an, a] and adds (an, a) 2; [a, n] subtracts
    # (a, n) 1 and becomes [an]. Now pairs is {(a, n): 0, (n, a): 0, (an, a): 2}, and
    # (a, n), the merged pair, is deleted. (n, a) stays, with count 0 (a Counter keeps a
    # count that falls to 0), and [an, a] is still listed in holders[(n, a)] though it no
    # longer holds (n, a): a stale entry, harmless as said above. Merge 2 is (an, a):
    # [an, a] becomes [ana], and (an, a) is deleted. Only (n, a) is left, with count 0, and
    # the loop stops at `most < 1`.
    counts = collections.Counter(words)
    words, freq = [list(w) for w in counts], list(counts.values())     # words as lists of tokens
    pairs, holders = collections.Counter(), collections.defaultdict(set)  # pair -> count, -> words
    for i, word in enumerate(words):
        for pair in zip(word, word[1:]):
            pairs[pair] += freq[i]
            holders[pair].add(i)
    merges = []
    while pairs and len(merges) < num_merges:
        most = max(pairs.values())
        if most < 1:
            break
        best = min(pair for pair, n in pairs.items() if n == most)
        merges.append(best)
        for i in holders.pop(best):     # the words that hold it: take out their pairs, merge, count again
            for pair in zip(words[i], words[i][1:]):
                pairs[pair] -= freq[i]
            words[i] = merge_pair(words[i], best)
            for pair in zip(words[i], words[i][1:]):
                pairs[pair] += freq[i]
                holders[pair].add(i)
        del pairs[best]
        if progress:
            progress(len(merges))
    return merges


def bpe(word, ranks):
    """Encode one word: while some adjacent pair of its tokens was learned, merge the pair
    learned earliest (the lowest rank). ranks: {(left, right): rank}. For example "banana"
    with ranks {(a, n): 0, (an, a): 1, (b, an): 2}: b a n a n a -> b an an a (rank 0, both
    places) -> b an ana (rank 1) -> ban ana (rank 2): the ranks merged were 0, 1, 2.
    This gives the same tokens as the slow, obvious way: replaying all the merges in
    learned order, each on the whole word. Why, in two steps.
    First, the ranks of the pairs bpe merges only go up (as in banana): once every copy of
    the pair of rank r is merged, every pair left ranks after r. A pair left is either new,
    holding a token that merge r just made, or old, there before merge r.
      - A new pair's rank is above r, for a reason about learning, not about bpe. The
        token merge r made did not exist before merge r was learned, and a merge can join
        only tokens that already exist. So any merge that uses it was learned later, and
        has a higher rank ("an" is made by rank 0 and used by ranks 1 and 2). (This needs
        each token to be made by one merge only: see the last paragraph.)
      - An old pair was there before, so its rank was r or more (r was the lowest present),
        and it is not r, for every copy of r was merged (merge_pair goes left to right, so
        even "aaa" with (a, a) becomes [aa, a], which holds no (a, a)): so its rank is
        above r too.
    Second, bpe makes the replay's merges, in the same order; it only skips the ranks whose
    pair is not in the word, where the replay finds nothing to do. By induction: say that
    after bpe merges rank r1, the replay has done every rank up to r1 and holds the same
    tokens (true before any merge, with r1 = -1: both hold the word's letters). bpe next
    merges r2, the lowest rank present, which is above r1 (the first step). No rank between
    r1 and r2 is present (r2 is the lowest), so the replay merges nothing there, its word
    stays bpe's word, and at r2 both merge the same pair: they agree again. When bpe finds
    no learned pair, the replay's remaining merges find none either.
    Why one merge per token: where two merges make the same token, the proof's first step
    fails, and bpe and the replay can disagree. Take these five merges, where "abc" can be
    made two ways, by rank 2 and by rank 4:
        rank 0: (a, b)    rank 1: (b, c)    rank 2: (a, bc)    rank 3: (abc, d)
        rank 4: (ab, c)
    On "abcd":
        bpe:     rank 0 (a, b) -> ab c d; the only learned pair left is (ab, c), so
                 rank 4 (ab, c) -> abc d; then rank 3 (abc, d) -> abcd
        replay:  rank 0 (a, b) -> ab c d; rank 1 (b, c) and rank 2 (a, bc) find no pair
                 (b is inside ab), nor does rank 3 (abc, d) (no abc yet);
                 rank 4 (ab, c) -> abc d; no rank is left to join abc and d: [abc, d]
    After rank 4, (abc, d) is a new pair: it holds the token that rank 4 just made. By the
    "new pair" bullet its rank should be above 4, but it is 3. The bullet's reason fails
    because "abc" already existed before rank 4 (rank 2 had made it), so (abc, d) could be
    learned at rank 3.
    learn_merges never learns a second way to spell a token it has (a test checks it on
    random texts), and GPT-2's 50,000 merges make 50,000 different tokens."""
    while len(word) > 1:
        # a pair that is no merge gets rank infinity, so it is picked only if no pair is a merge
        pair = min(zip(word, word[1:]), key=lambda p: ranks.get(p, math.inf))
        if pair not in ranks:
            break
        word = merge_pair(word, pair)
    return word


def long_word_bpe(word, ranks):
    """bpe() for a long word. (A speed detail, not part of the lesson: skip it.) bpe()
    scans the whole word once per merge it makes, so a word of 100,000 letters (a line of
    DNA, a base64 blob) took minutes with GPT-2's 50,000 merges. Here each adjacent pair is
    kept in a heap by (rank, position), and a merge only looks at its two new neighbours:
    the same merges in the same order (the lowest rank first, left to right), in
    n log n time."""
    tokens, n = list(word), len(word)
    after, before = list(range(1, n + 1)), list(range(-1, n - 1))    # a linked list of the tokens left
    heap = [(ranks[pair], i) for i, pair in enumerate(zip(tokens, tokens[1:])) if pair in ranks]
    heapq.heapify(heap)
    while heap:
        rank, i = heapq.heappop(heap)
        j = after[i]
        if tokens[i] is None or j >= n or ranks.get((tokens[i], tokens[j])) != rank:
            continue                                   # that pair was changed by an earlier merge
        tokens[i], tokens[j] = tokens[i] + tokens[j], None
        after[i] = after[j]
        if after[i] < n:
            before[after[i]] = i
        for left in (before[i], i):                    # the new pairs on either side of the merged token
            if left >= 0 and after[left] < n and (tokens[left], tokens[after[left]]) in ranks:
                heapq.heappush(heap, (ranks[(tokens[left], tokens[after[left]])], left))
    return [t for t in tokens if t is not None]


def one_of(ranges):
    """A regular expression for one character in `ranges` ([(first, last)] code points).
    (A speed detail, not part of the lesson: skip it.) Python's re tests a character
    against the ranges of code points beyond U+FFFF one by one, which made the
    pre-tokenizer 8 times slower: so they are tried only for a character up there."""
    def chars(lo, hi):
        return "".join(f"\\U{max(a, lo):08x}-\\U{min(b, hi):08x}" for a, b in ranges if b >= lo and a <= hi)
    astral = chars(0x10000, sys.maxunicode)
    return f"(?:[{chars(0, 0xFFFF)}]" + (f"|(?=[\\U00010000-\\U0010ffff])[{astral}])" if astral else ")")


@functools.lru_cache(maxsize=None)     # built once, when first needed (it takes about 0.4 s)
def gpt2_pretokenizer():
    r"""GPT-2's pre-tokenizer, as a compiled regular expression whose findall() cuts a text
    into the pieces that BPE then encodes one at a time. GPT-2 wrote it as
        's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+
    Each alternative is tried in order, and the first that matches takes the piece:
        's|'t|...|'d     an English contraction, lower case only: "it's" -> "it", "'s"
                         ("IT'S" -> "IT", "'", "S")
         ?\p{L}+         an optional space and letters: " dog"
         ?\p{N}+         an optional space and numbers, not only digits: " 42", " Ⅻ½"
         ?[^\s\p{L}\p{N}]+
                         an optional space and other symbols: "!!", " <|"
        \s+(?!\S)        white space that is followed by white space or the end. Before a
                         word it keeps all the spaces but the last, which the word takes:
                         "Hello   world" (three spaces) -> "Hello", "  ", " world". Step by
                         step: \s+ takes the three spaces; the lookahead then sees "w", a
                         non-space, and fails; so the regex gives back (backtracks) one
                         space, and with two taken the lookahead sees a space, and passes.
        \s+              any other white space: the lone newline in "a\nb" -> "a", "\n", "b"
                         (the word patterns above take only a space, never a newline)
    Python's re has no \p{L} (letters) or \p{N} (numbers). Its \s also differs: Python
    counts the four separator controls U+001C to U+001F as white space, GPT-2 does not. So
    we list the kinds ourselves (letters, numbers, white space, and everything else, the
    other symbols), from unicodedata's categories and str.isspace().
    (?!\S) is a lookahead: it checks, without taking it, that the next character is white
    space, or that the text ends. We write it as "the next character is not a letter,
    number or other symbol", which is the same, as every character is one of the four kinds."""
    kinds = {"L": [], "N": [], " ": [], "other": []}     # [(first, last)] code points of each
    for code in range(sys.maxunicode + 1):
        ch = chr(code)
        kind = " " if ch.isspace() and not "\x1c" <= ch <= "\x1f" else unicodedata.category(ch)[0]
        ranges = kinds.get(kind, kinds["other"])
        if ranges and ranges[-1][1] == code - 1:
            ranges[-1][1] = code
        else:
            ranges.append([code, code])
    letter, number, other, space = (one_of(kinds[k]) for k in ("L", "N", "other", " "))
    return re.compile(f"'s|'t|'re|'ve|'m|'ll|'d| ?{letter}+| ?{number}+| ?{other}+"
                      f"|{space}+(?!{letter}|{number}|{other})|{space}+")


def bytes_to_unicode():
    """GPT-2's stand-in character for each byte value, [256]: the 188 printable Latin-1
    characters (bytes 33 to 126, 161 to 172, 174 to 255) stand for themselves; the other 68
    (controls, the space, the no-break space 160 and the soft hyphen 173, both invisible)
    get characters from U+0100 on, so that the space 32 is "Ġ" (U+0120), the newline 10 "Ċ"."""
    printable = [b for b in range(256) if 33 <= b <= 126 or 161 <= b <= 172 or 174 <= b <= 255]
    others = [b for b in range(256) if b not in printable]
    table = {b: chr(b) for b in printable}
    table.update({b: chr(256 + n) for n, b in enumerate(others)})
    return [table[b] for b in range(256)]


class Vocabulary(list):
    """A BPE vocabulary: the list of token strings, as Part I's chars (the base characters,
    then one token per merge, in learned order, then any special tokens), with the merges
    that made it. Part I's encode() hands a text to Vocabulary.encode() when its vocabulary
    has merges. With byte_level=True (GPT-2), three things change: chars begins with the
    stand-ins of the 256 bytes in vocab.json's id order (printable bytes first: the table
    in IV.1's opening); a word starts as the stand-ins of its UTF-8 bytes, not as its
    characters; and byte_char lists the stand-ins in byte order (byte_char[b] is byte b's),
    to turn bytes into stand-ins."""

    def __init__(self, chars, merges, specials=(), byte_level=False):
        super().__init__(list(chars) + [left + right for left, right in merges] + list(specials))
        self.merges = [tuple(pair) for pair in merges]
        self.ranks = {pair: rank for rank, pair in enumerate(self.merges)}
        # token -> id. A guard for merge lists made by hand: two merges may spell the same
        # string, as ("a", "bc") and ("ab", "c") both spell "abc" (learn_merges and GPT-2's
        # file never do). The first id wins: the dict is built from the last id to the
        # first, so the first is written last.
        self.ids = {token: i for i, token in reversed(list(enumerate(self)))}
        self.byte_char = bytes_to_unicode() if byte_level else None
        self.cache = {}                     # word -> its ids: words repeat a lot

    def encode(self, text):
        """A text's token ids: GPT-2's pre-tokenizer cuts it into words, and bpe() encodes
        each distinct word once. Special tokens never come out of a text: the text
        "<|endoftext|>" is 7 ordinary tokens, "<", "|", "end", "of", "text", "|", ">" (ids 27,
        91, 437, 1659, 5239, 91, 29: the pre-tokenizer cuts it into "<|", "endoftext" and
        "|>", and GPT-2 learned no merge for "<|" or "|>"), as encode_ordinary gives them
        in tiktoken, OpenAI's own tokenizer library. Only a program puts GPT2_EOT in a
        sequence, so a text cannot forge the separator between documents. (The tokenizer of
        Hugging Face's transformers library, by default, does turn that text into 50256.)"""
        words = gpt2_pretokenizer().findall(text)
        for word in set(words).difference(self.cache):      # the distinct words not yet cached
            start = [self.byte_char[b] for b in word.encode("utf-8")] if self.byte_char else list(word)
            pieces = bpe(start, self.ranks) if len(start) < 1000 else long_word_bpe(start, self.ranks)
            self.cache[word] = [self.ids[token] for token in pieces]
        # each word's ids from the cache, in the text's order, joined into one list
        ids = list(itertools.chain.from_iterable(map(self.cache.__getitem__, words)))
        if len(self.cache) > 100000:
            self.cache.clear()              # a bound on memory, after a text of many distinct words
        return ids

    def decode_bytes(self, ids):
        """The UTF-8 bytes of these tokens. A GPT-2 token may end inside a character (an
        emoji is several tokens): decode them to text only once the character is complete."""
        text = "".join(self[i] for i in ids)
        if not self.byte_char:
            return text.encode("utf-8")
        byte_of = {ch: b for b, ch in enumerate(self.byte_char)}
        return bytes(byte_of[ch] for ch in text)


# ---------------------------------------------------------------------------------------
# IV.2 GPT-2's forward pass: the same model, with seven differences
#
# OpenAI's GPT-2 (2019) is the model Part I simplified. Its smallest size has 124 million
# parameters instead of 4,192 (12 layers, n_embd 768, 12 heads, 50,257 tokens, 1,024
# positions), but its forward pass is gpt() with seven changes, each marked "GPT-2 (1):"
# to "GPT-2 (7):" below where it happens. The first five change what is computed (item 5
# changes which matrix turns the last vector into scores); the last two only how the
# weights are stored (6) and how long a text may be (7). Most are the habits of 2019
# rather than necessities:
#   1. LayerNorm, with a learned gain and bias, instead of RMSNorm. LayerNorm was the
#      standard then; RMSNorm (no mean subtracted, no bias; Part I's has no gain either)
#      was later found to train as well for less work, and is what newer models use.
#   2. GELU instead of ReLU in the MLP: a smooth ReLU, with no kink at 0, which GELU's
#      authors (2016) found to train slightly better; BERT and the first GPT used it too.
#   3. A bias (a learned number) added after every matrix inside the blocks, so an
#      output can be shifted away from 0 (the output scores, from wte, have none); newer
#      models mostly drop them, finding they add little.
#   4. No norm right after the embeddings (Part I's gpt() has one there), but a final
#      LayerNorm before the output. Each block normalises its own input (as in Part I), so
#      the embeddings need no norm of their own; but the residual stream grows as blocks
#      add to it, so it is normalised once more before the scores.
#   5. The output layer is wte itself (tied): no separate lm_head. That saves 50,257 x 768
#      = 38.6 million parameters, nearly a third of GPT-2's 124 million.
#   6. Query, key and value come out of one fused matrix, c_attn, 3 * n_embd rows tall: on
#      a GPU one big matrix product is faster than three small ones; here it is the same work.
#   7. 1,024 positions (wpe has 1,024 learned rows), so a prompt plus what it writes is at
#      most 1,024 tokens.
# Only inference here: the weights come trained from OpenAI, so there is no graph, just
# plain floats and the key/value cache of Part I. gpt2() reuses attention_head (through
# causal_self_attention below), whose first line hands the work to Part II's
# fast_attention_head when the flag FAST is on. Only that one can take plain floats (Part
# I's own lines read each score's .data and call .exp()), so for GPT-2 FAST is always on:
# the command line refuses --plain with --gpt2.
#
# The weights come in a safetensors file: 8 bytes that give the length of a JSON header,
# the header (each tensor's name, number type, shape and byte offsets), then the numbers
# themselves, raw. Reading it runs no code, unlike PyTorch's older .bin files (pickles,
# which can run any code when loaded); Part VI's load_gpt2 checks every offset and shape
# before it reads a number. One twist: OpenAI's matrices (in layers its code calls
# "Conv1D", a convolution of width 1, which is a plain matrix product) are stored
# [n_in][n_out], the transpose of Part I's [n_out][n_in], so load_gpt2 transposes them
# on the way in. The weights are kept as rows of 4-byte floats (array('f'), as the file
# stores them): 124M parameters take 500 MB that way, against about 4 GB as Python floats
# in lists (a float object is 24 bytes, and the list holds an 8-byte pointer to it).
#
# Speed. A token costs about one multiply-add per parameter: 124 million. Nearly all of
# them are in linear layers, each output one dot product of a weight row with x, so
# dot_product() below is the whole speed story. math.sumprod (Python 3.12+) does it in C,
# about twice as fast as sum(map(mul, row, x)), Part II's way. PyPy, a Python that
# compiles busy loops to machine code while it runs, makes sum(map(mul, row, x)) fast
# already. Everything else in a token costs a few percent.
# ---------------------------------------------------------------------------------------

from array import array

dot_product = getattr(math, "sumprod", None) or (lambda row, x: sum(map(mul, row, x)))


@dataclass
class GPT2Config:
    """The shape of a GPT-2 model, from its config.json (Part VI reads it)."""
    n_layer: int = 12
    n_embd: int = 768
    n_head: int = 12
    n_positions: int = 1024      # GPT-2 (7): the longest context, in tokens
    vocab_size: int = 50257
    n_inner: int = 3072          # the MLP's width, 4 * n_embd
    eps: float = 1e-5            # LayerNorm's guard against dividing by zero


def layer_norm(x, gain, bias, eps):
    """GPT-2 (1): LayerNorm. Like rmsnorm(), but it subtracts the mean first, so x is
    centred as well as scaled, and then each number gets its own learned gain and bias:
    (x - mean) / sqrt(variance + eps) * gain + bias.   [n] -> [n]"""
    mu = sum(x) / len(x)
    centred = [xi - mu for xi in x]
    scale = (dot_product(centred, centred) / len(x) + eps) ** -0.5
    return [c * scale * g + b for c, g, b in zip(centred, gain, bias)]


def gelu(x):
    """GPT-2 (2): GELU, a smooth ReLU: about x for large x, about 0 for very negative x,
    with a soft bend between (and a small dip below 0). Exactly, it is x times the share of
    a bell curve (a standard normal) lying below x (Hendrycks and Gimpel, 2016); GPT-2 uses
    this tanh approximation of it: sqrt(2/pi) and 0.044715 are the constants that make the
    curves match (the two stay within 0.0005 of each other).   [n] -> [n]"""
    c = math.sqrt(2 / math.pi)
    return [0.5 * v * (1 + math.tanh(c * (v + 0.044715 * v * v * v))) for v in x]


def affine(x, w, b):
    """GPT-2 (3): linear() plus a bias: y[i] = w[i] . x + b[i].   x: [n_in], w: [n_out][n_in] -> [n_out]"""
    return [dot_product(row, x) + bi for row, bi in zip(w, b)]


def causal_self_attention(q, keys, values, n_head, attention_log=None):
    """Part I's attention, unchanged: each head attends over its slice of the cached keys
    and values (this position and the earlier ones), and the heads' outputs are joined.
    q: [n_embd], keys, values: [pos+1][n_embd] -> [n_embd]"""
    hd = len(q) // n_head
    out = []
    for h in range(n_head):
        sl = slice(h * hd, (h + 1) * hd)
        ks, vs = [k[sl] for k in keys], [v[sl] for v in values]
        out.extend(attention_head(q[sl], ks, vs))
        if attention_log is not None:
            attention_log.append(attention_weights(q[sl], ks))
    return out


def gpt2(token, pos, keys, values, w, config, attention_log=None):
    """GPT-2's logits after reading `token` at position `pos`: gpt() with the seven changes.
    w: name -> weights, named as in OpenAI's files (Part VI's load_gpt2 makes it), each
    matrix as [n_out][n_in] rows. keys, values: the cache, as for gpt().   -> [vocab_size]"""
    e, eps = config.n_embd, config.eps
    # GPT-2 (4): the embeddings' sum goes into the blocks without a norm.
    x = [t + p for t, p in zip(w["wte.weight"][token], w["wpe.weight"][pos])]   # [n_embd]
    for i in range(config.n_layer):
        L = f"h.{i}."
        # Attention block, as in gpt(): norm, attend, project, add back to the residual.
        a = layer_norm(x, w[L + "ln_1.weight"], w[L + "ln_1.bias"], eps)
        # GPT-2 (6): one matrix makes q, k and v at once, side by side.
        qkv = affine(a, w[L + "attn.c_attn.weight"], w[L + "attn.c_attn.bias"])   # [3 * n_embd]
        keys[i].append(qkv[e:2 * e])
        values[i].append(qkv[2 * e:])
        a = causal_self_attention(qkv[:e], keys[i], values[i], config.n_head, attention_log)
        x = [xi + yi for xi, yi in zip(x, affine(a, w[L + "attn.c_proj.weight"], w[L + "attn.c_proj.bias"]))]
        # MLP block, as in gpt(): norm, widen to n_inner, GELU, narrow, add back.
        m = layer_norm(x, w[L + "ln_2.weight"], w[L + "ln_2.bias"], eps)
        m = gelu(affine(m, w[L + "mlp.c_fc.weight"], w[L + "mlp.c_fc.bias"]))      # [n_inner]
        x = [xi + yi for xi, yi in zip(x, affine(m, w[L + "mlp.c_proj.weight"], w[L + "mlp.c_proj.bias"]))]
    # GPT-2 (4) again: a last LayerNorm.
    x = layer_norm(x, w["ln_f.weight"], w["ln_f.bias"], eps)
    # GPT-2 (5): the scores are x's dot product with every token's embedding (wte, tied), so
    # a token scores high when x looks like its vector.
    return [dot_product(row, x) for row in w["wte.weight"]]                  # [vocab_size]


def next_token(logits, temperature, top_k, rng):
    """The next token: the likeliest at temperature 0 (greedy: the same text every time);
    otherwise drawn as sample_token() draws, from the top_k likeliest only if top_k is set
    (so that the many unlikely tokens, whose small probabilities add up, are never
    drawn)."""
    if temperature == 0:
        return max(range(len(logits)), key=logits.__getitem__)
    ids = range(len(logits))                    # the candidates: every token,
    if top_k:                                   # or only the top_k likeliest
        ids = sorted(ids, key=logits.__getitem__, reverse=True)[:top_k]
    # sample_token() returns a place in this list of candidates; ids[] turns it into a token
    return ids[sample_token([logits[i] for i in ids], temperature, rng)]


def generate(prompt_ids, length, w, config, temperature, top_k, rng):
    """Read the prompt, then write `length` tokens, yielding each as soon as it is chosen.
    The prompt must hold at least one token: with none, the command line starts GPT-2 from
    <|endoftext|>, as Part I starts from BOS. The command line also refuses a prompt plus
    length beyond the 1,024 positions (GPT-2 (7))."""
    keys, values = [[] for _ in range(config.n_layer)], [[] for _ in range(config.n_layer)]
    tokens = list(prompt_ids)
    # Reading the prompt's last token gives the first choice; the last token chosen is never
    # read, as nothing comes after it.
    # So a 3-token prompt and length 2 read 4 positions: 0 and 1 (the next token is given),
    # 2 (the prompt's last: choose the 1st token), 3 (the 1st token: choose the 2nd).
    for pos in range(len(tokens) + length - 1):
        logits = gpt2(tokens[pos], pos, keys, values, w, config)
        if pos >= len(prompt_ids) - 1:       # the prompt's next tokens are given, then we choose
            tokens.append(next_token(logits, temperature, top_k, rng))
            yield tokens[-1]


def gpt2_explain(tokens, w, config):
    """explain() for GPT-2: per position, the next-token probabilities and each head's
    attention weights (layer by layer, head by head)."""
    keys, values = [[] for _ in range(config.n_layer)], [[] for _ in range(config.n_layer)]
    rows = []
    for pos, t in enumerate(tokens):
        log = []
        rows.append((softmax(gpt2(t, pos, keys, values, w, config, log)), log))
    return rows


# =======================================================================================
# PART V. FROM NAMES TO AN ASSISTANT
#
# ChatGPT is made in stages, and this part runs each of them, in miniature, on names. A
# model pretrained on names (Part I) can only babble names. To make it an assistant that
# answers "a name starting with em" with "emma", we
#   V.1  set it a task small enough to learn and strict enough to check by code;
#   V.2  give it a chat format: new tokens that mark who speaks, added to its vocabulary;
#   V.3  fine-tune it on example conversations, with the loss on the answers only (SFT);
#   V.4  let it practise: it answers, code checks the answers, and it learns from its own
#        good and bad answers, with no example answer at all (reinforcement learning);
#   V.5  measure after every stage how often it answers unseen requests correctly.
# Nothing here is new machinery: the same gpt(), the same autograd and the same Adam
# (adam_update) as Part I, on the fast path of Part II. The command line runs it all with
# `python microgpt.py --chat` (Part VI, "The assistant"), and prints the report card.
# =======================================================================================

# ---------------------------------------------------------------------------------------
# V.1 The task
#
# Requests in a small, fixed English, each answered with one name: "a name starting with X"
# and "a name ending with X", X being 1 to 3 letters. An answer is correct when it satisfies
# the request, is made of letters only, is longer than X (echoing "em" is not a name
# starting with "em"), and ends: the model writes a token that means "answer over" (V.2)
# before the context runs out (V.4 says how long an answer can be). Code can check that,
# so no person has to grade answers: that is what makes reinforcement learning (V.4)
# possible.
#
# To measure whether the model learned the task or only the requests it trained on, some
# requests are held out of fine-tuning: some X never appear in any fine-tuning request
# (unseen prefixes and suffixes), others appear only with the other kind (unseen
# combinations: "ending with an" is held out while "starting with an" is trained).
# ---------------------------------------------------------------------------------------

TASKS = {"starting with": str.startswith, "ending with": str.endswith}   # kind -> its check
ENDING = "ending with"


def request_for(kind, x):
    return f"a name {kind} {x}"


def affix(name, kind, length):
    """The first (or last) `length` letters of a name: the X of a request it answers."""
    return name[:length] if kind == "starting with" else name[-length:]


def is_correct(kind, x, answer, ended):
    """Whether an answer is correct: the reward of V.4 (True counts 1, False 0). answer is
    the list of its tokens' texts, so len(answer) counts tokens. Each must be one letter:
    the vocabulary also holds the request's phrases and the chat's special tokens (V.2),
    and the model might write one. ended: it ended its turn (V.2's TURN_ENDS: <|end|>, or
    <|user|> or <|assistant|>; the chat stops showing an answer at these too) within the
    context (the end of V.4 says why that allows 8 letters at block_size 16)."""
    return (ended and len(answer) > len(x) and all(len(t) == 1 and t.isalpha() for t in answer)
            and TASKS[kind]("".join(answer), x))


def split_requests(names, rng, share=0.15):
    """Every request (kind, X) some name answers, split into those fine-tuning may use and
    those held out for evaluation. For each length of X (1, 2, 3 letters), the X are
    shuffled, and two kinds of request are held out:
      - unseen X: the first 15% (`share`) of the shuffled X, at least 2, are held out with
        both kinds.
        Say X = "jo": no fine-tuning request has "jo".
      - unseen combinations: of the other X, those that both start and end some name
        ("an" starts "anna" and ends "susan"), a `share` are held out with one kind only,
        the kind held out chosen at random. Say "ending with an" is held out, while
        "starting with an" is trained.
    Returns (train, held_out), two sets of (kind, X)."""
    # found: every (kind, X) with X of 1 to 3 letters that starts (or ends) a longer name
    found = {(kind, affix(n, kind, k)) for n in names for kind in TASKS for k in (1, 2, 3) if len(n) > k}
    xs = sorted({x for _, x in found})
    held = set()
    for length in (1, 2, 3):
        group = [x for x in xs if len(x) == length]
        rng.shuffle(group)
        unseen = group[:max(2, round(share * len(group)))]
        held |= {(kind, x) for x in unseen for kind in TASKS if (kind, x) in found}
        both = [x for x in group[len(unseen):] if all((kind, x) in found for kind in TASKS)]
        held |= {(rng.choice(sorted(TASKS)), x) for x in both[:round(share * len(both))]}
    return found - held, held


def evaluation_requests(held_out, count, rng):
    """`count` held-out requests of each kind, a third with X of each length (none of a
    length with no held-out X; a request may come more than once: there are few 1-letter
    X), in a fixed order."""
    chosen = []
    for kind in TASKS:
        for length in (1, 2, 3):
            pool = sorted(x for k, x in held_out if k == kind and len(x) == length)
            # count // 3 each, and the remainder, count % 3, gives one more each to the
            # shortest X: count 10 gives 4, 3, 3 and count 11 gives 4, 4, 3
            n = count // 3 + (length <= count % 3)        # (a comparison adds as 1 or 0)
            chosen += [(kind, rng.choice(pool)) for _ in range(n)] if pool else []
    return chosen


# ---------------------------------------------------------------------------------------
# V.2 The chat format
#
# A conversation is one sequence of tokens, with new tokens that say who speaks: <|user|>
# opens the request, <|assistant|> the answer, <|end|> closes it. The model learns their
# meaning from where they appear. Each new token needs a new row in wte (what it means as
# input) and in lm_head (its score as output); the pretrained rows are kept, which is how
# real chat models are made from base models. Two of the new rows start as copies of BOS's
# rows, <|assistant|>'s in wte and <|end|>'s in lm_head, because the pretrained model
# already knows what BOS means: <|assistant|> reads like BOS (a name begins after it) and
# <|end|> is predicted like BOS (the name ends here). The other new rows start random.
# The chat model has no use for BOS itself (the new tokens mark its turns), so the chat
# vocabulary drops it (its rows live on in the two copies).
#
# The fixed English of the requests gets a token per phrase ("a name starting with "), as
# byte-pair encoding would make of a phrase this frequent if it merged across words (GPT-2's
# does not: Part IV), and X's letters go into five slots. For "starting with" the letters
# fill the slots from the left and <|pad|> the rest (em -> e m <|pad|> <|pad|> <|pad|>); for
# "ending with" from the right (son -> <|pad|> <|pad|> s o n). So every prompt has 8 tokens:
# <|user|> at position 0, the phrase at 1, the 5 slots at 2 to 6, <|assistant|> at 7. As in
# Part I, each token is predicted while reading the one before it, so the answer's first
# letter is written while reading <|assistant|> at 7, and the first slot is at 2, 5
# positions back; the second letter is written while reading 8, and the second slot is at
# 3, again 5 back; and so on. So the model can copy each of X's letters from exactly 5
# positions back (why that helps follows the tables). "a name starting with em -> emma"
# goes as follows (the column "5 back holds" gives the position 5 before the
# one read, its slot and its token: "2, slot 1: e" is position 2, slot 1, holding e):
#     position  reads           5 back holds          writes next
#        7      <|assistant|>   2, slot 1: e          e        (copied)
#        8      e               3, slot 2: m          m        (copied)
#        9      m               4, slot 3: <|pad|>    m        (a letter of its own)
#       10      m               5, slot 4: <|pad|>    a        (a letter of its own)
#       11      a               6, slot 5: <|pad|>    <|end|>
# So letter k is copied from slot k where that slot holds a letter of X, and is the model's
# own where it holds <|pad|>.
# For "ending with", X fills the last slots (son: slots 3, 4, 5), so copying puts its
# letters at the answer's letters 3, 4, 5, and the answer ends with X only if it stops after
# letter 5. So for that kind, fine-tuning (V.3) shows only 5-letter names ("jason" for son).
# A longer name ending with X would be correct too, but "edison" would need s, o, n as its
# letters 4 to 6, while they sit in slots 3 to 5: letter k is copied from slot k only.
# "a name ending with son -> jason" (rendered in full below) goes the same way:
#     position  reads           5 back holds          writes next
#        7      <|assistant|>   2, slot 1: <|pad|>    j        (a letter of its own)
#        8      j               3, slot 2: <|pad|>    a        (a letter of its own)
#        9      a               4, slot 3: s          s        (copied)
#       10      s               5, slot 4: o          o        (copied)
#       11      o               6, slot 5: n          n        (copied)
#       12      n               7: <|assistant|>      <|end|>  (X is used up)
# Why five slots, when X has at most 3 letters? For "ending with", X fills the last slots
# and letter k is copied from slot k, so an answer ends with X only if it has exactly as
# many letters as there are slots: 5 slots, 5-letter answers. That number must be more
# than X's 3 letters at most (with 3 slots, "ending with son" could only be answered
# "son", which is not correct), so 4 slots would do; we use 5 because there are more
# 5-letter names than 4-letter ones to learn from.
# Why a fixed distance helps: the model knows where it is only from wpe, which names
# absolute positions. With every prompt 8 tokens long, reading position 7 always looks
# at position 2, reading 8 at 3, and so on: the same pair of positions in every
# conversation, learned once. Without the slots, where the request ends, and so where
# the copying starts, would move with the length of X: a different thing to learn for
# each length. With the slots, a small model learns to copy in a few hundred steps.
# Without them, a 2-layer model fine-tuned on 2,000 conversations passed 21% and 0% of
# the held-out requests (starting with, ending with); with them, the same model and data
# passed 92% and 70%. (That was an experiment made while designing this part. The command
# line's pipeline, ChatPlan in Part VI, uses 1 layer, n_embd 16 and 2 heads, 4,352
# parameters with the 32 tokens of the chat vocabulary, and reaches the figures of V.5.)
# Rendered, with the loss mask V.3 uses (1 under each token the loss counts, the answer's;
# V.3 says why). The 1 sits under the token that is predicted, not under the one read
# when predicting it: the loss for "j" is taken while reading <|assistant|>.
#
#     a name starting with em -> emma
#     <|user|> "a name starting with " e m <|pad|> <|pad|> <|pad|> <|assistant|> e m m a <|end|>
#        0              0              0 0    0       0       0         0        1 1 1 1    1
#     a name ending with son -> jason
#     <|user|> "a name ending with " <|pad|> <|pad|> s o n <|assistant|> j a s o n <|end|>
#        0              0               0       0    0 0 0       0       1 1 1 1 1    1
# ---------------------------------------------------------------------------------------

USER, ASSISTANT, END, PAD = "<|user|>", "<|assistant|>", "<|end|>", "<|pad|>"
SPECIAL = (USER, ASSISTANT, END, PAD)
# The model may write any token of its vocabulary, special ones too (at a high temperature,
# often). As real chat systems do, the answer ends at <|end|> and also at <|user|> or
# <|assistant|>, which would open a new turn; none of the three is shown. Any other special
# token (<|pad|>) stays in the answer, shown as a token, not text, and is never correct.
TURN_ENDS = (END, USER, ASSISTANT)
REQUEST_TOKENS = 6       # a phrase and five slots for X


def chat_vocab(chars):
    """The pretrained vocabulary (without BOS) followed by the new tokens."""
    return list(chars) + list(SPECIAL) + [f"a name {kind} " for kind in TASKS]


def add_chat_tokens(params, chars, chat_chars, config, rng):
    """The pretrained parameters with a row in wte and lm_head for each new token: copies of
    BOS's rows for <|assistant|> (in wte) and <|end|> (in lm_head), random for the others.
    BOS's own rows (the last) are dropped. The matrices are new lists, but the pretrained
    rows in them are the same Values: fine-tuning the chat model changes params too."""
    # bos is BOS's id, so matrix[bos] is BOS's row in a pretrained matrix; in the chat
    # vocabulary the same id is <|user|>'s, the first new token, so chat_chars[bos:] are
    # the new tokens.
    bos = len(chars)

    def rows(matrix, gets_bos_row):
        """matrix without BOS's row, plus one row per new token: for the token
        gets_bos_row a copy of BOS's row, for the others random numbers."""
        new = [[Value(p.data) for p in matrix[bos]] if t == gets_bos_row else
               [Value(rng.gauss(0.0, config.init_std)) for _ in range(config.n_embd)]
               for t in chat_chars[bos:]]                  # the new tokens
        return matrix[:bos] + new
    chat = dict(params)
    chat["wte"], chat["lm_head"] = rows(params["wte"], ASSISTANT), rows(params["lm_head"], END)
    return chat


def encode_text(text, chat_chars):
    """A request's text to token ids, taking the longest token that matches at each point
    (so a phrase is one token); None if some part matches no token. Raw text never becomes a
    special token: they are made only by render()."""
    tokens = sorted((t for t in chat_chars if t not in SPECIAL), key=len, reverse=True)
    ids, i = [], 0
    while i < len(text):
        match = next((t for t in tokens if text.startswith(t, i)), None)
        if match is None:
            return None
        ids.append(chat_chars.index(match))
        i += len(match)
    return ids


def render(request_ids, answer_ids, chat_chars):
    """A conversation as (tokens, mask): mask[i] is 1 where tokens[i] is the assistant's."""
    user, assistant, end, pad = (chat_chars.index(t) for t in SPECIAL)
    padding = [pad] * (REQUEST_TOKENS - len(request_ids))
    if request_ids and chat_chars[request_ids[0]] == f"a name {ENDING} ":
        request_ids = request_ids[:1] + padding + request_ids[1:]    # X at the right: [phrase, pad, pad, s, o, n]
    else:
        request_ids = request_ids + padding                           # X at the left: [phrase, e, m, pad, pad, pad]
    tokens = [user] + request_ids + [assistant] + answer_ids + [end]
    return tokens, [0] * (len(request_ids) + 2) + [1] * (len(answer_ids) + 1)


def parse(tokens, chat_chars):
    """render() backwards: the (request, answer) texts of a rendered conversation."""
    text = "".join(chat_chars[t] for t in tokens if chat_chars[t] != PAD)
    request, _, answer = text[len(USER):].partition(ASSISTANT)
    return request, answer[:-len(END)] if answer.endswith(END) else answer


def prompt_for(request_ids, chat_chars):
    """The tokens the assistant continues: the rendered request up to <|assistant|>."""
    return render(request_ids, [], chat_chars)[0][:-1]     # [:-1]: without render's <|end|>


def generate_answer(weights, config, prompt, rng, temperature, end_ids):
    """The assistant's answer to a rendered prompt (ending with <|assistant|>), token by
    token: yields (token, probabilities) until it draws one of end_ids (the ids of
    TURN_ENDS), which it yields too, or the context is full.
    The probabilities are at temperature 1, the model's own, whatever temperature
    the sampling uses. Temperature 0 takes the likeliest token every time."""
    keys, values = [[] for _ in range(config.n_layer)], [[] for _ in range(config.n_layer)]
    tokens = list(prompt)
    for pos in range(config.block_size):
        logits = gpt(tokens[pos], pos, keys, values, weights, config)
        if pos < len(tokens) - 1:
            continue                      # the prompt's next token is given
        probs = [float(p) for p in softmax(logits)]
        token = (max(range(len(probs)), key=probs.__getitem__) if temperature <= 0
                 else sample_token(logits, temperature, rng))
        yield token, probs
        if token in end_ids:
            return
        tokens.append(token)


def chat_prompt(request, config, chat_chars):
    """The rendered prompt for a request's text; if there is none, raises BadInput saying why.
    Only the two requests of V.1 are answered: other text ("hello") would still encode to
    letters, and the model would write letters back as if it had understood."""
    ids = encode_text(request, chat_chars)
    phrases = [t for t in chat_chars if len(t) > 1 and t not in SPECIAL]
    if ids is None:
        unknown = sorted(set(request) - set("".join(t for t in chat_chars if t not in SPECIAL)))
        if unknown:
            raise BadInput("characters the model has never seen: " + " ".join(map(repr, unknown)))
    # ids can also be None with every character known: text that does not split into the
    # vocabulary's tokens, such as "hello world" (a space outside a phrase). The check below
    # refuses it as a request the assistant does not understand.
    x = [chat_chars[t] for t in (ids or [])[1:]]
    if not ids or chat_chars[ids[0]] not in phrases or not 1 <= len(x) <= 3 or not all(
            len(t) == 1 and t.isalpha() for t in x):
        raise BadInput("the assistant understands only " + " and ".join(f"'{t}X'" for t in phrases)
                       + f", X being 1 to 3 letters; not {request!r}")
    # The prompt is <|user|>, the phrase, X in its slots, <|assistant|>: 8 tokens, and at
    # most block_size - 1, to leave a position for the answer.
    prompt = prompt_for(ids, chat_chars)
    if len(prompt) >= config.block_size:
        raise BadInput(f"a request takes {len(prompt)} tokens, so this model's context of "
                       f"{config.block_size} leaves no room for an answer")
    return prompt


def chat_reply(weights, config, chars, request, rng, temperature):
    """The assistant's answer to a request, as it is written: yields (piece, probability,
    alternatives) per token, piece being its text, probability the model's (at temperature
    1) for it, alternatives the five likeliest [(text, probability)]. Stops at the end of
    its turn (TURN_ENDS, not yielded) or when the context is full. BadInput for a request it
    cannot read."""
    prompt = chat_prompt(request, config, chars)
    for token, probs in generate_answer(weights, config, prompt, rng, temperature, turn_end_ids(chars)):
        if chars[token] in TURN_ENDS:
            return
        top = sorted(range(len(probs)), key=lambda t: -probs[t])[:5]
        yield chars[token], probs[token], [(chars[t], probs[t]) for t in top]


def answer_probabilities(weights, config, prompt, answer_ids):
    """The probability (at temperature 1) the model gives each token of a given answer to a
    rendered prompt: what generate_answer reported while drawing that answer. The --report
    page (Part VI) needs it: it colours each token of an answer drawn earlier by its
    probability, and drawing again could give another answer. The model runs once over
    prompt and answer; what it predicts after the last answer token goes unused.
    logits_at_every_position is Part III's: the model run over a whole sequence."""
    tokens = (list(prompt) + list(answer_ids))[:config.block_size]
    logits = logits_at_every_position(tokens, weights, config)
    return [float(softmax(logits[len(prompt) - 1 + i])[t]) for i, t in enumerate(answer_ids)]


def turn_end_ids(chat_chars):
    """The ids of the tokens that end the assistant's answer (TURN_ENDS)."""
    return {chat_chars.index(t) for t in TURN_ENDS}


def answer_request(weights, config, chat_chars, kind, x, rng, temperature):
    """The assistant's answer to (kind, X): (prompt, answer's token ids, the texts of those
    chat_reply shows, whether it ended, and whether it is correct). It is judged as
    chat_reply shows it: up to the token that ends the turn, <|end|> or a new turn's."""
    prompt = prompt_for(encode_text(request_for(kind, x), chat_chars), chat_chars)
    ends = turn_end_ids(chat_chars)
    ids = [t for t, _ in generate_answer(weights, config, prompt, rng, temperature, ends)]
    ended = bool(ids) and ids[-1] in ends       # it ended its turn, rather than filling the context
    texts = [chat_chars[t] for t in (ids[:-1] if ended else ids)]
    return prompt, ids, texts, ended, is_correct(kind, x, texts, ended)


# ---------------------------------------------------------------------------------------
# V.3 Supervised fine-tuning (SFT)
#
# Show the model example conversations and train it, as in Part I's section 6, to predict
# their tokens, but count the loss only on the assistant's tokens (the mask of V.2). The
# request is given at inference, never written by the model, so predicting it would be
# wasted effort: the model would spend its few parameters learning which requests we happen
# to make, and that loss would drown the one we care about. With the mask, the request is
# read but never predicted. The examples are made from the names: "jason" gives "a name
# starting with ja" -> "jason" and "a name ending with son" -> "jason" (for "ending with",
# only names of 5 letters, as X's last letter is copied as the 5th: V.2). Only requests not
# held out are used.
# ---------------------------------------------------------------------------------------

def sft_answers(names, requests, config):
    """For each kind, every (X, name) that fine-tuning may show: the request (kind, X) is
    among `requests`, the conversation fits the context, and for "ending with" the name
    has exactly 5 letters, one per slot, so that each of X's letters is copied from 5
    positions back, as V.2 explains."""
    found = {kind: [] for kind in TASKS}
    for name in names:
        for kind in TASKS:
            for k in (1, 2, 3):
                x = affix(name, kind, k)
                # The whole conversation is <|user|>, the request's 6 tokens, <|assistant|>,
                # the name and <|end|>: len(name) + 9 tokens. The model reads every token
                # but the last, <|end|>, which it only predicts, so len(name) + 8
                # positions must fit the context: names of at most 8 letters at block_size
                # 16.
                fits = len(name) + REQUEST_TOKENS + 2 <= config.block_size
                if (len(name) > k and (kind, x) in requests and fits
                        and (kind != ENDING or len(name) == REQUEST_TOKENS - 1)):
                    found[kind].append((x, name))
    return found


def sft_example(answers, chat_chars, rng):
    """A random fine-tuning conversation (tokens, mask): a kind, then one of its (X, name)."""
    kind = rng.choice(sorted(answers))
    x, name = rng.choice(answers[kind])
    return render(encode_text(request_for(kind, x), chat_chars), encode_text(name, chat_chars), chat_chars)


def answer_losses(tokens, mask, params, config):
    """The loss of each of the assistant's tokens, -log p(token | all before it): the
    model reads every token, but only the positions whose next token is the assistant's
    get a loss."""
    keys, values = [[] for _ in range(config.n_layer)], [[] for _ in range(config.n_layer)]
    losses = []
    for pos in range(min(config.block_size, len(tokens) - 1)):
        logits = gpt(tokens[pos], pos, keys, values, params, config)
        if mask[pos + 1]:
            losses.append(cross_entropy(logits, tokens[pos + 1]))
    return losses


def backpropagate(compute_loss):
    """Build a graph with compute_loss() (it returns the loss, a Value), add its gradient to
    the parameters' .grad, and return its number. With FAST, the nodes are recorded in
    Value.tape as they are made (Part II.2), and backward runs along that list with no
    search for an order: the same gradients, sooner."""
    if not FAST:
        loss = compute_loss()
        loss.backward()
        return loss.data
    Value.tape = []
    try:
        loss = compute_loss()
    finally:
        tape, Value.tape = Value.tape, None
    backward_along(loss, tape)
    return loss.data


def optimise(params, config, num_steps, add_step_gradient):
    """Adam, as train() runs it (Part I, section 6): add_step_gradient(step) adds one step's
    gradient to the parameters and returns a number to report, which this yields."""
    flat = flatten(params)
    m, v = [0.0] * len(flat), [0.0] * len(flat)
    for step in range(num_steps):
        result = add_step_gradient(step)
        adam_update(flat, m, v, step, num_steps, config)
        yield result


def sft_steps(params, config, examples, num_steps, batch):
    """Fine-tune on `batch` conversations per step (examples(step, b) gives one); yields
    each step's mean answer loss. One conversation's graph at a time, as train() does."""
    def add_step_gradient(step):
        total = 0
        for b in range(batch):
            tokens, mask = examples(step, b)
            # divided by batch, so that the total over the batch is the batch's mean loss
            total += backpropagate(lambda: mean(answer_losses(tokens, mask, params, config))
                                   * (1 / batch))
        return total
    return optimise(params, config, num_steps, add_step_gradient)


# ---------------------------------------------------------------------------------------
# V.4 Reinforcement learning (RL)
#
# SFT imitates the example answers; it never tells the model which of its own answers are
# wrong. Reinforcement learning does: the model answers a request several times (a group),
# code grades each answer (reward 1 if correct, else 0), and the model is nudged towards its
# better answers and away from its worse ones. No example answer is needed, only the check:
# the model learns from what it wrote itself, so it can fix the mistakes it really makes
# (running on past the end, dropping a letter of X), which SFT's examples never show. This
# is GRPO (Group Relative Policy Optimisation) in its simplest form, close to what
# Karpathy's nanochat uses on maths problems (nanochat only subtracts the mean; we also
# divide by the spread of the group's rewards, as GRPO's paper does). Real GRPO takes
# several steps on the same answers, so it limits (clips) the ratio of an answer's
# probability now to its probability when it was drawn, so that no step moves it far. We
# take one step, on answers just drawn, so that ratio is 1 and there is nothing to limit.
# Nor do we hold the model near its fine-tuned self (a KL penalty): see reward hacking
# below.
# The advantage of an answer is (its reward - the group's mean) / the group's spread, the
# standard deviation sqrt(mean of (reward - mean)**2) over the group's answers (0.33 when 1
# of 8 is right). With the mean subtracted, only how an answer compares with its siblings
# counts; dividing by the spread puts every group's push on the same scale, so a lone
# success is pushed hard. In a group of 8, one right answer gets +2.65 and each wrong one
# -0.38; with four right, +1 and -1; with seven right, +0.38 and -2.65 for the one wrong. A
# group where all are right (or all wrong) teaches nothing and costs no gradient.
#
# RL practises on the requests fine-tuning may use (V.1), never on the held-out ones, so
# that V.5 stays a test of requests the model has never trained on.
#
# The loss whose gradient does the nudging is, over the n answers of a step,
#     L = -(1/n) * sum_i advantage_i * log p(answer_i)
# where log p(answer_i) is the sum of the log-probabilities of the tokens the model drew.
# -log p of a token is the cross-entropy of Part I's section 6, so this is SFT's loss on
# the model's own answers, weighted by their advantage: a positive advantage makes an
# answer likelier, a negative one less likely. It is summed over an answer's tokens, as
# log p of a whole answer is that sum; SFT averages over each conversation's tokens, as
# Part I does over a name's, so that a long example weighs no more than a short one.
# The answers are drawn at temperature 1, from p itself, because only then does L's
# gradient follow the expected reward (derived next). Here grad is the gradient with
# respect to the parameters, and p(a) the probability of a whole answer a (the product of
# its tokens' probabilities). The expected reward is E[R] = sum_a p(a) R(a), over all
# answers a; R(a) is a fixed number for each answer, with no gradient of its own. The
# chain rule gives grad log p = grad p / p, that is grad p = p grad log p, so
#     grad E[R] = sum_a R(a) grad p(a) = sum_a p(a) R(a) grad log p(a),
# the average, over answers a drawn from p, of R(a) grad log p(a). -grad L is that average
# taken over the answers actually drawn (an estimate of it), with the advantage in place of
# R. Answers drawn at a temperature below 1 (a sharpened p) would average something else.
# So going down L's gradient (what Adam does) goes up E[R]. The advantage stands in for R:
#   - subtracting the group's mean b changes nothing on average, since for any b that
#     does not depend on the answer, sum_a p(a) b grad log p(a) = b grad sum_a p(a) =
#     b grad 1 = 0; it only makes the estimate less noisy;
#   - strictly, the group's mean is not quite such a b, as it includes a's own reward.
#     Split the mean of G rewards into a's own share, R(a)/G, and the others' share, S/G
#     (S the sum of the other G - 1 rewards): the numerator is R(a) - R(a)/G - S/G. The
#     others' share does not depend on a (they are drawn independently of it), so it is a
#     true b and averages to 0; a's own share just shrinks R(a) to (G - 1)/G of itself
#     (7/8 for the pipeline's groups of 8), which scales the expected gradient and leaves
#     its direction unchanged;
#   - dividing by the spread does change the expected gradient: it weights each group's
#     push by 1/spread, which gives every group with both right and wrong answers
#     advantages of root-mean-square 1. The spread is smallest in lopsided groups: 0.33
#     with 1 or 7 right of 8, against 0.5 with 4 right. So a 1-of-8 group is pushed 3
#     times (1/0.33) as hard as with the mean subtracted alone, a 4-of-8 group 2 times
#     (1/0.5): a lone success (or a lone failure) counts for more.
#
# RL gets exactly what it rewards. The reward asks for X, letters and an end, not for a name
# that sounds like one, so the answers drift to whatever letters are easiest to produce,
# names or not: "arson" for "ending with son", and "srhahhhh" for "starting with s", h
# after h up to the longest answer the context leaves room for. (8 letters is the longest
# answer that can still end: the prompt's 8 tokens and 8 letters fill positions 0 to 15,
# and <|end|> is predicted while reading position 15, so it needs no position of its own.)
# This is reward hacking, in miniature. Real pipelines hold the model near its fine-tuned
# self (a KL penalty) or reward with a learned judge of quality.
# ---------------------------------------------------------------------------------------

def advantages(rewards):
    """GRPO's advantages of a group: (reward - mean) / spread, all 0 if the rewards are equal."""
    mu = sum(rewards) / len(rewards)
    spread = (sum((r - mu) ** 2 for r in rewards) / len(rewards)) ** 0.5
    return [(r - mu) / spread if spread else 0.0 for r in rewards]


def answer_group(weights, config, chat_chars, kind, x, rng, size):
    """`size` answers to one request, drawn at temperature 1: [(tokens, mask, reward)]."""
    group = []
    for _ in range(size):
        prompt, ids, _, _, correct = answer_request(weights, config, chat_chars, kind, x, rng, 1.0)
        group.append((prompt + ids, [0] * len(prompt) + [1] * len(ids), float(correct)))
    return group


def policy_loss(tokens, mask, advantage, n, params, config):
    """One answer's share of L: (advantage / n) * (-log p(answer)), a Value."""
    # -log p(answer) is the sum of the answer's token losses, written as mean * count:
    # the same number, in fewer graph nodes than a chain of + (with FAST, mean is one node).
    losses = answer_losses(tokens, mask, params, config)
    return mean(losses) * (len(losses) * advantage / n)


def rl_steps(params, config, chat_chars, requests, num_steps, group_size, rng):
    """GRPO: each step draws a group of answers to each of `requests(step)` (a list of
    (kind, X), from the fine-tuning requests), grades them and adds the gradient of L;
    yields the step's mean reward."""
    def add_step_gradient(step):
        weights = inference_weights(params)
        groups = [answer_group(weights, config, chat_chars, kind, x, rng, group_size)
                  for kind, x in requests(step)]
        n = sum(len(g) for g in groups)
        for group in groups:
            for (tokens, mask, _), a in zip(group, advantages([r for _, _, r in group])):
                if a:
                    backpropagate(lambda: policy_loss(tokens, mask, a, n, params, config))
        return sum(r for g in groups for _, _, r in g) / n
    return optimise(params, config, num_steps, add_step_gradient)


# ---------------------------------------------------------------------------------------
# V.5 Evaluation
#
# After every stage: the share of held-out requests (V.1) answered correctly, per kind,
# sampled at the chat's own temperature (0.5, Config's default, as for names), so that it
# measures the assistant people talk to.
# With the command line's defaults (ChatPlan, Part VI), 120 requests of each kind, the
# report card (the table the command line prints at the end) reads: pretrained (the name
# model with add_chat_tokens' new rows, before any fine-tuning) 0% and 0% (starting with,
# ending with), after SFT 88.3% and 87.5%, after RL 97.5% and 99.2%.
# Correct means what the reward checks (V.1), so these count RL's reward hacks ("srhahhhh",
# V.4) as right: the card's example answers show what they are. The whole run takes about
# 30 s of CPU on PyPy and two minutes on CPython.
# ---------------------------------------------------------------------------------------

def pass_rates(weights, config, chat_chars, requests, rng, temperature):
    """{kind: share of correct answers} over (kind, X) requests, and the answers given."""
    right, answers = {kind: [] for kind in TASKS}, []
    for kind, x in requests:
        _, _, texts, _, correct = answer_request(weights, config, chat_chars, kind, x, rng, temperature)
        right[kind].append(correct)
        answers.append((request_for(kind, x), "".join(texts), correct))
    return {kind: sum(r) / len(r) for kind, r in right.items() if r}, answers


# =======================================================================================
# PART VI. THE PLUMBING
#
# What turns the algorithm into a program people can rely on: files read and written
# safely, checkpoints, every user mistake turned into one clear line, and the command
# line. A learner can skip it. (The modules that only the plumbing uses are imported here,
# not at the top, so that the reader meets them where they are needed.)
# =======================================================================================

import argparse
import errno
import hashlib
import json
import os
import shlex
import signal
import site
import stat
import tempfile
import time


class BadInput(Exception):
    """Something the user can fix: a missing file, an impossible setting. The command line
    turns it into a one-line message and exit code 2."""


def encode_for(what, text, chars):
    """encode(), or BadInput naming `what` was being encoded and every character that is
    not in the vocabulary."""
    check_known(what, text, chars)
    return encode(text, chars)


def check_known(what, text, chars):
    """BadInput naming `what` and every character of text that is not in the vocabulary."""
    unknown = sorted(set(text) - set(chars))
    if unknown:
        raise BadInput(f"{what}: characters the model has never seen: " + " ".join(repr(ch) for ch in unknown))


def encode_with_progress(what, text, chars):
    """encode_for(), a million characters at a time, saying how far it has got."""
    check_known(what, text, chars)
    if getattr(chars, "merges", None):      # Part IV's tokens may span the pieces: all at once
        return encode(text, chars)
    progress, ids, step = Progress(f"encoding {what}", len(text), "characters"), [], 2**20
    for start in range(0, len(text), step):
        progress.update(start)
        ids += encode(text[start:start + step], chars)
    return ids


def check_finite_scores(weights, config, why="the model's scores are not finite numbers: its weights "
                                              "are too large to compute with", should_stop=lambda: False):
    """Refuse (BadInput: why) a model whose scores are not finite numbers (its weights are so
    large that the arithmetic overflows), before it is asked to sample or explain anything.
    Every token, BOS included, is read at every position: sampling starts from BOS, and a
    check of one token would pass a model that overflows on another. Its cost grows as
    vocab_size squared (a minute for --bpe 8000), so should_stop() is asked between its
    windows: a stopped run saves its model at once. Returns True if it checked every token,
    False if should_stop() cut it short."""
    vocab_size, bs = len(weights["wte"]), config.block_size
    # Token ids from the last (BOS, for documents) round and round, block_size at a time.
    tokens = [(vocab_size - 1 + i) % vocab_size for i in range(-(-vocab_size // bs) * bs)]
    progress = Progress("checking the model's scores", vocab_size, "tokens")
    if not score_check_is_quick(weights, config):      # seconds, before its first progress line
        print(f"checking the model's scores: each of its {vocab_size:,} tokens at every position", flush=True)
    try:
        for start in range(0, len(tokens), bs):
            if should_stop():
                return False
            progress.update(min(start, vocab_size))       # the last window wraps round to the first tokens
            rows = logits_at_every_position(tokens[start:start + bs], weights, config)
            if not all(math.isfinite(float(l)) for row in rows for l in row):
                raise BadInput(why)
    except (OverflowError, ValueError):
        raise BadInput(why) from None
    return True


def score_check_is_quick(weights, config):
    """Whether check_finite_scores(weights, config) is over within about a second, so that a
    stopped run can finish it rather than cut it short. Each token it reads uses every weight
    about once; measured in CPython, that costs 50 to 200 ns per weight with plain floats
    (Part II) and about 100 times more with Part I's Values. So: at most 10 million of them
    (the default model: 32 tokens x 4,192 weights, about 10 ms; --bpe 1000: 36 million, 2 s)."""
    tokens = -(-len(weights["wte"]) // config.block_size) * config.block_size
    work = tokens * sum(len(row) for matrix in weights.values() for row in matrix)
    return work * (1 if FAST else 100) <= 10**7


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
MODEL_SHAPE = ("n_layer", "n_embd", "n_head", "block_size")   # the fields that fix the model's shape


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
            # A megabyte at a time: f.read(MAX_FILE_BYTES + 1) would make PyPy set aside the
            # whole 100 MB at once, however small the file (measured: 172 MB peak, not 96).
            chunks, size = [], 0
            progress = Progress(f"reading {path}", info.st_size if regular else None, "bytes")
            while size <= MAX_FILE_BYTES:
                chunk = f.read(2**20)
                if not chunk:
                    break
                chunks.append(chunk)
                size += len(chunk)
                progress.update(size)
            data = b"".join(chunks)
    except FileNotFoundError:
        raise BadInput(f"{what} not found: {path}") from None
    except IsADirectoryError:
        raise BadInput(f"{path} is a directory, not a {what}") from None
    except OSError as e:
        raise BadInput(f"cannot read {path}: {e.strerror or e}") from None
    if len(data) > MAX_FILE_BYTES:
        raise BadInput(f"{path} is larger than {MAX_FILE_BYTES // 2**20} MB, the most microgpt reads")
    for mark, encoding in ((b"\xff\xfe\x00\x00", "UTF-32"), (b"\x00\x00\xfe\xff", "UTF-32"),
                           (b"\xff\xfe", "UTF-16"), (b"\xfe\xff", "UTF-16")):
        if data.startswith(mark):
            raise BadInput(f"{path} is {encoding} text (it starts with a {encoding} byte-order mark): "
                           "save it as UTF-8")
    nul = data.find(b"\x00")      # valid UTF-8, but no text a person writes holds NUL characters
    if nul >= 0:
        raise BadInput(f"{path} holds NUL bytes (the first at offset {nul}): it looks like UTF-16 or "
                       "UTF-32 text, or binary data, not UTF-8 text")
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
        with open(path, encoding="utf-8-sig") as f:      # how every checkpoint we write begins
            if f.read(len(CHECKPOINT_START)) == CHECKPOINT_START:
                return True
        if os.path.getsize(path) > MAX_FILE_BYTES:
            return False
        with open(path, encoding="utf-8-sig") as f:      # written by hand, keys in another order
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
    for name in (path, os.path.dirname(path) or "."):
        try:
            os.stat(name)
        except FileNotFoundError:
            pass
        except OSError as e:       # a symlink loop, a file where a directory should be, no permission
            raise BadInput(f"cannot write {path}: {e.strerror or e}" + (" (a symlink loop)" if e.errno ==
                                                                         getattr(errno, "ELOOP", None) else ""))
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
    # Whatever else would make the write fail only at the end, after the training (a name
    # too long for the file system, a directory like /proc that takes no new files): try
    # now what write_atomically will do, with a temporary file whose name is as long (in bytes:
    # ".microgpt-", 8 random characters, then x's).
    name_bytes = len(os.fsencode(os.path.basename(os.path.realpath(path))))
    try:
        with stop_signals_held():
            fd, probe = tempfile.mkstemp(prefix=".microgpt-", suffix="x" * max(0, name_bytes - 18), dir=directory)
            os.close(fd)
            os.remove(probe)
    except OSError as e:
        raise BadInput(f"cannot write {path}: {e.strerror or e}") from None


def file_identity(path):
    """What is at `path` now: None if nothing, else which file it is and its version (device,
    inode, time of change, size). A save compares this with what was there when the run
    started, so that a file another program (or another run) put there meanwhile is kept."""
    try:
        info = os.stat(path)
    except OSError:
        return None
    return info.st_dev, info.st_ino, info.st_mtime_ns, info.st_size


def same_file(a, b):
    """Whether two paths name the same file (through symlinks), whether or not it exists yet."""
    try:
        return os.path.samefile(a, b)
    except OSError:
        return os.path.normcase(os.path.realpath(a)) == os.path.normcase(os.path.realpath(b))


@contextlib.contextmanager
def stop_signals_held():
    """Hold Ctrl-C, SIGTERM and SIGHUP until the block ends (where the platform can), so that
    a signal cannot cut a write short between creating a temporary file and removing it."""
    numbers = {getattr(signal, name) for name in ("SIGINT", "SIGTERM", "SIGHUP") if hasattr(signal, name)}
    try:
        held = signal.pthread_sigmask(signal.SIG_BLOCK, numbers)
    except (AttributeError, ValueError, OSError):
        held = None
    try:
        yield
    finally:
        if held is not None:
            signal.pthread_sigmask(signal.SIG_SETMASK, held)    # a held signal is handled now


def write_atomically(path, text):
    """Write to a temporary file beside `path`, then rename it over `path`: the rename is
    atomic, so an interrupted write never leaves half a file or destroys the old one."""
    with stop_signals_held():
        write_then_rename(path, text)


def usual_mode():
    """The permissions a new file gets here: 0o666 less the umask (0o644 for most users)."""
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


def write_then_rename(path, text):
    path = os.path.realpath(path)        # through a symlink: the link stays, its target is replaced
    directory = os.path.dirname(path)
    fd, tmp = tempfile.mkstemp(prefix=".microgpt-", suffix=".tmp", dir=directory)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        try:                              # a file we replace keeps the permissions it had
            old = os.stat(path)
            os.chmod(tmp, stat.S_IMODE(old.st_mode))
            if hasattr(os, "chown") and (old.st_uid, old.st_gid) != (os.stat(tmp).st_uid, os.stat(tmp).st_gid):
                try:                      # and its owner (root replacing another user's file)
                    os.chown(tmp, old.st_uid, old.st_gid)
                except OSError:           # only root may give a file away
                    pass
        except FileNotFoundError:         # mkstemp makes the file private; use the usual mode
            os.chmod(tmp, usual_mode())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.remove(tmp)
        except OSError:
            pass
        raise


CHECKPOINT_START = '{"format": "microgpt", '     # json.dumps writes "format" first


def checkpoint_bytes_at_most(n_params, chars, config):
    """The largest a checkpoint of n_params weights, this vocabulary and a run of config.steps
    steps can be: a number takes at most 26 bytes (a float's longest form, as
    "-2.2250738585072014e-308", and ", "), and there are three per parameter (the weight and
    Adam's two averages) and one per step (its loss); a character takes 12 ("\\ud83d\\ude00")
    and a token 4 more (quotes, comma); then the samples of the history (25 of at most
    max(block_size, 80) characters) and room for the rest (the random state, the options)."""
    return (26 * (3 * n_params + config.steps) + sum(12 * len(c) + 4 for c in chars)
            + 25 * 12 * max(config.block_size, 80) + 65536)


def check_checkpoint_size(n_params, chars, path, config):
    """Refuse, before training, a model whose checkpoint could be too large to load again: one
    size rule, MAX_FILE_BYTES, for what --save writes and what --load (and --save) read."""
    size = checkpoint_bytes_at_most(n_params, chars, config)
    if size > MAX_FILE_BYTES:
        raise BadInput(f"--save {path}: the checkpoint of {n_params:,} parameters (with Adam's state) and "
                       f"{config.steps:,} steps could take up to {size / 2**20:,.0f} MB, more than the "
                       f"{MAX_FILE_BYTES // 2**20} MB microgpt reads back: choose a smaller --n-embd, --n-layer "
                       "or --block-size (or fewer --steps)")


def save_checkpoint(path, params, config, chars, mode, extra=None):
    """Save the model as JSON. mode is "docs", "stream" or "chat" (only "docs" models have BOS)."""
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
        text = json.dumps(checkpoint) + "\n"
    except ValueError as e:       # what json cannot write (an integer of thousands of digits)
        raise BadInput(f"cannot save to {path}: {e}") from None
    if len(text.encode("utf-8")) > MAX_FILE_BYTES:      # check_checkpoint_size keeps this from happening
        raise BadInput(f"cannot save to {path}: the checkpoint would be larger than "
                       f"{MAX_FILE_BYTES // 2**20} MB, the most microgpt reads")
    try:
        write_atomically(path, text)
    except OSError as e:
        raise BadInput(f"cannot save to {path}: {e.strerror or e}") from None


def save_rescue_copy(params, config, chars, mode, extra):
    """Save a trained model whose --save path failed to a new file of its own; returns its path."""
    return write_rescue_copy(".json", lambda path: save_checkpoint(path, params, config, chars, mode, extra),
                             "the trained model")


def write_rescue_copy(suffix, write, what):
    """What a run could not write where it was asked to (a checkpoint, a page), written by
    write(path) to a new file of its own, microgpt-rescued-*<suffix>, in the current directory
    or else the system's temporary one, never replacing anything; returns its path."""
    for directory in (os.getcwd(), tempfile.gettempdir()):
        path = None
        try:
            with stop_signals_held():
                fd, path = tempfile.mkstemp(prefix="microgpt-rescued-", suffix=suffix, dir=directory)
                os.close(fd)
            os.chmod(path, usual_mode())          # not mkstemp's private 0600: a file like any other
            write(path)
            return path
        except (OSError, BadInput):
            try:                                  # a full disk: leave no empty file behind
                if path and os.path.getsize(path) == 0:
                    os.remove(path)
            except OSError:
                pass
            continue
    raise BadInput(f"cannot save {what} anywhere: neither here nor in the temporary directory")


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
        if type(value) is not int or not 1 <= value <= LARGEST_COUNT:
            shown = repr(value) if len(repr(value)) <= 20 else repr(value)[:20] + "..."
            raise bad(f'config "{key}" must be a whole number from 1 to 10**12, not {shown}')
    config = Config(**{key: cfg[key] for key in MODEL_SHAPE})
    if config.n_embd % config.n_head:
        raise bad(f"n_embd {config.n_embd} is not divisible by n_head {config.n_head}")
    chars = ckpt["chars"]
    mode = ckpt.get("mode", "docs")
    if mode not in ("docs", "stream", "chat"):
        raise bad(f'unknown mode {mode!r}')
    if "merges" in ckpt:                # a learned BPE vocabulary (Part IV): check it, keep its base
        chars = checked_vocabulary(chars, ckpt["merges"], bad)
    longest = 64 if mode == "chat" else 1          # a chat model (Part V) has tokens of several characters
    if (not isinstance(chars, list) or not chars
            or not all(isinstance(c, str) and 1 <= len(c) <= longest for c in chars) or len(set(chars)) != len(chars)):
        raise bad('"chars" must be a list of distinct single characters' + " or tokens" * (mode == "chat"))
    if "merges" in ckpt:
        chars = Vocabulary(chars, [tuple(pair) for pair in ckpt["merges"]])
    if mode == "chat" and not set(SPECIAL) <= set(chars):
        raise bad('a chat model needs the tokens ' + ", ".join(SPECIAL) + ' in "chars"')
    if "stream_start" in ckpt and ckpt["stream_start"] not in chars:
        raise bad('"stream_start" must be one of the characters in "chars"')
    vocab_size = len(chars) + (1 if mode == "docs" else 0)     # stream and chat models have no BOS
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
    check_remembered(ckpt, sum(rows * cols for rows, cols in shapes.values()), bad)   # history, Adam, rng
    return config, chars, params, mode, ckpt


# ---------------------------------------------------------------------------------------
# A model that remembers its run
#
# A checkpoint that a training run saves keeps, besides the weights, what it takes to go on
# exactly where the run stopped, and to draw its training afterwards:
#   "history"    the run's loss at every step, its validation points and its samples
#                during training (what --report draws; report_recorder fills it)
#   "optimizer"  Adam's m and v (one number per parameter each, in flatten() order) and its
#                step count: how many updates these weights have had
#   "rng"        the training random stream's state (it draws the windows of --stream)
#   "run"        the options the run was started with, its first Adam step, and a digest of
#                its data
# With them, --resume FILE continues a stopped run to the very numbers of a run that never
# stopped, and --load FILE --steps N fine-tunes with Adam's memory instead of from zero.
# ---------------------------------------------------------------------------------------

def is_count(x, least=0):
    """Whether x is a whole number (not a bool) from `least` to LARGEST_COUNT."""
    return type(x) is int and least <= x <= LARGEST_COUNT


def is_list_of(x, ok):
    """Whether x is a list whose every item passes ok(item)."""
    return isinstance(x, list) and all(ok(item) for item in x)


def check_remembered(ckpt, n_params, bad):
    """Check the keys a saved run adds (each optional, so older checkpoints still load)."""
    history = ckpt.get("history", {})
    if not (isinstance(history, dict) and is_list_of(history.get("losses", []), is_finite_number)
            and is_list_of(history.get("val_points", []), lambda p: isinstance(p, list) and len(p) == 2
                           and is_count(p[0]) and is_finite_number(p[1]))
            and is_list_of(history.get("snapshots", []), lambda s: isinstance(s, dict) and is_count(s.get("step"))
                           and is_list_of(s.get("samples"), lambda t: isinstance(t, str)))):
        raise bad('"history" must hold "losses", "val_points" and "snapshots" as --save writes them')
    if "val_subset" in history and not is_count(history["val_subset"]):
        raise bad('"history" "val_subset" must be a whole number')
    adam = ckpt.get("optimizer", {"m": [0.0] * n_params, "v": [0.0] * n_params, "step": 0})
    if not (isinstance(adam, dict) and is_count(adam.get("step"))
            and all(is_list_of(adam.get(key), is_finite_number) and len(adam[key]) == n_params
                    for key in ("m", "v")) and min(adam["v"], default=0) >= 0):
        raise bad(f'"optimizer" must hold "m" and "v" ({n_params:,} numbers each, v never negative) and "step"')
    if "rng" in ckpt:
        try:
            random.Random().setstate(rng_state(ckpt["rng"]))
        except (TypeError, ValueError, OverflowError):
            raise bad('"rng" is not the state of a random stream') from None
    run = ckpt.get("run")
    if run is not None and not (isinstance(run, dict) and is_count(run.get("steps"), 1) and is_count(run.get("start"))
                                and (run.get("batch") == "all" or is_count(run.get("batch"), 1))
                                and is_finite_number(run.get("lr")) and type(run.get("seed")) is int
                                and isinstance(run.get("input"), str) and isinstance(run.get("data_sha256"), str)
                                and is_finite_number(run.get("temperature")) and is_count(run.get("num_samples"))
                                and (run.get("length") is None or is_count(run.get("length"), 1))
                                and (run.get("prompt") is None or isinstance(run.get("prompt"), str))):
        raise bad('"run" does not describe a run as --save writes it')


def rng_state(saved):
    """random.Random's state from its JSON form [version, [625 whole numbers], gauss_next]."""
    version, internal, gauss = saved
    return version, tuple(internal), gauss


def saved_seed(ckpt, default):
    """The seed the checkpoint's model was trained with, if it says (else `default`)."""
    training = ckpt.get("training")
    seed = training.get("seed") if isinstance(training, dict) else None
    return seed if type(seed) is int else default


def data_digest(text):
    """A fingerprint of the training text: --resume checks it is the same data."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def resume_options(args):
    """--resume FILE: check that FILE holds a run that was stopped before its end, and set
    args to the options that run was started with (the sampling ones only where the command
    line gives none; --save defaults to FILE). Returns load_checkpoint(FILE)."""
    checkpoint = load_checkpoint(args.resume)
    ckpt, path = checkpoint[4], args.resume
    run = ckpt.get("run")
    if checkpoint[3] == "chat":          # --chat's stages keep no run: the pipeline is not resumed step by step
        then = " (or, with --save, goes on to its reinforcement learning)" if ckpt.get("stage") == "SFT" else ""
        raise BadInput(f"{path} is a chat model, which --resume does not continue: --load {path} --chat talks "
                       f"to it{then}")
    if run is None or any(key not in ckpt for key in ("optimizer", "rng", "history")):
        raise BadInput(f"{path} holds no run to resume (it was saved by --chat's pretraining or by an older "
                       f"microgpt); --load {path} --steps N trains it further")
    done = len(ckpt.get("history", {}).get("losses", []))
    if done and not history_of(ckpt["history"]):   # losses or points that no run records (see history_of)
        raise BadInput(f"{path} does not add up: its history holds losses or validation points no run "
                       f"records, so it cannot be resumed as it was; --load {path} --steps N trains it further")
    if ckpt["optimizer"]["step"] != run["start"] + done and done < run["steps"]:   # edited by hand?
        raise BadInput(f"{path} does not add up: Adam's step is {ckpt['optimizer']['step']:,} but the run "
                       f"started at {run['start']:,} and recorded {done:,} steps, so it cannot be resumed "
                       f"as it was; --load {path} --steps N trains it further")
    if done >= run["steps"] or ckpt["optimizer"]["step"] != run["start"] + done:
        raise BadInput(f"{path} finished its run ({done:,} of {run['steps']:,} steps): nothing to resume; "
                       f"--load {path} --steps N trains it further")
    fixed = ["load", "steps", "lr", "batch", "seed"] + list(MODEL_SHAPE)
    given = [flag for flag in fixed if getattr(args, flag) is not None] + ["stream"] * args.stream
    if given:
        raise BadInput(f"--{given[0].replace('_', '-')} cannot change the run that --resume continues: "
                       "it goes on with the options it was started with")
    args.load, args.steps, args.lr, args.batch, args.seed = path, run["steps"], run["lr"], run["batch"], run["seed"]
    args.input = args.input or run["input"]
    for key in ("temperature", "num_samples", "length", "prompt"):
        if getattr(args, key) is None:
            setattr(args, key, run[key])
    if args.save is None:
        args.save = path
    return checkpoint


def training_state(args, ckpt, params, rng, text):
    """Adam's state to train with ({"m", "v", "step"}, as train() keeps it) and the history
    of the run so far (None unless resuming). A new model starts Adam from zero, and so does
    a loaded one saved without Adam's state (see say_how_fine_tuning_goes); any other goes on
    with its saved Adam. A resumed run also gets back its training random stream, as it was
    at the stop."""
    n = len(flatten(params))
    saved = ckpt.get("optimizer")
    if saved:
        adam = {"m": [float(x) for x in saved["m"]], "v": [float(x) for x in saved["v"]], "step": saved["step"]}
    else:
        adam = {"m": [0.0] * n, "v": [0.0] * n, "step": 0}
    if not args.resume:
        return adam, None
    if data_digest(text) != ckpt["run"]["data_sha256"]:
        # Say what is known: the file the run read has changed since, or this is another file.
        trained_on = ckpt["run"]["input"]
        how = ("it changed since" if same_file(args.input, trained_on)
               else f"that was {trained_on}" + ("" if os.path.exists(trained_on) else ", no longer there"))
        raise BadInput(f"{args.input} is not the text the run in {args.resume} was trained on ({how}): "
                       "the run cannot be continued as it was")
    rng.setstate(rng_state(ckpt["rng"]))
    return adam, ckpt["history"]


def say_how_fine_tuning_goes(config, adam, steps_before):
    """--load FILE --steps N goes on where the saved run ended: Adam keeps its averages m and v
    and its step count T, and the learning rate goes on down the run's straight line, stretched
    to end N steps later: lr * (1 - t / (T + N)) at step t, from lr * N / (T + N) down. So a
    short fine-tuning takes small steps and a long one larger ones; the model keeps what it
    learned. (Restarting Adam from zero at the full rate, as microgpt once did, throws it
    about: 200 such steps raised the validation loss of names.txt from 2.3667 to 2.3908;
    going on down the line lowers it to 2.3602.) A checkpoint saved without Adam's state (by
    an older microgpt) starts Adam from zero, on the same line: its rate is scaled here."""
    t, n = adam["step"], config.steps
    if t == 0 and steps_before:
        config.lr *= n / (steps_before + n)
        print(f"fine-tuning: the checkpoint has no saved Adam state, so Adam starts from zero, at learning "
              f"rate {config.lr:.3g} (going on down the line of its {steps_before:,} steps) falling to "
              f"{config.lr / n:.3g}")
    else:
        print(f"fine-tuning: Adam goes on from its step {t:,}, at learning rate {config.lr * n / (t + n):.3g} "
              f"(--lr {config.lr:g} on a line to step {t + n:,}) falling to {config.lr / (t + n):.3g}")


def run_options(args, config, mode, start, text):
    """The "run" key: what --resume needs to start this run again where it stopped."""
    return {"steps": config.steps, "start": start, "batch": config.batch, "lr": config.lr, "seed": config.seed,
            "input": os.path.abspath(args.input or default_data_path()), "data_sha256": data_digest(text),
            "temperature": config.temperature, "num_samples": config.num_samples,
            "length": config.length if mode == "stream" else None, "prompt": args.prompt}


def judge_sequences(text, chars, config, mode):
    """What to judge a model on when the data is too short to hold any out: its first
    documents, or windows, of training data."""
    if mode == "docs":
        return [encode_document(doc, chars) for doc in split_documents(text)[:200]]
    return stream_val_windows(encode(text, chars), config.block_size)[:200]


# A run with --report measures its validation points on 200 held-out documents (100
# windows); one that only saves measures them on 25 (12): an eighth of the time, about 6%
# of the default run's (measured), for points that wobble by about 0.07 instead of 0.03.
SAVED_VAL_SUBSET = {"docs": 25, "stream": 12}


def history_subset(history, report, mode):
    """How many held-out sequences the run's validation points use: as many as the run being
    resumed, or fine-tuned, used (one curve, one subset); else report_recorder's own choice
    with --report, SAVED_VAL_SUBSET without."""
    if history:
        return history.get("val_subset") or SAVED_VAL_SUBSET[mode]
    return None if report else SAVED_VAL_SUBSET[mode]


def remembered(record, adam, rng, run):
    """The keys a saved run adds to its checkpoint (see the top of this section)."""
    history = {key: record.get(key, []) for key in ("losses", "val_points", "snapshots", "val_subset")}
    history.update({key: record[key] for key in ("val_loss", "val_count", "earlier") if record.get(key) is not None})
    version, internal, gauss = rng.getstate()
    return {"history": history, "optimizer": {"m": adam["m"], "v": adam["v"], "step": adam["step"]},
            "rng": [version, list(internal), gauss], "run": run}


# How much worse training may make a model before --save refuses to replace a model file
# with it: 10% more loss per token. Fine-tuning that helps, or does nothing,
# moves the validation loss by a few hundredths (2.3667 -> 2.3602 for 200 more steps on
# names.txt); a rate that wrecks the model multiplies it (2.37 -> 69.6 after one step at
# 0.5, as fine-tuning once took with --lr 0.5). Between the two, 10% means the model lost
# what it knew, not that the loss wobbled.
WORSE_BY = 1.10


def judge_before_replacing(path, weights, weights_before, config, sequences):
    """A model is judged after its last update. When --save would replace a file that holds a
    model, measure the model before this run's training (as loaded, or at its random start)
    and after it on the same held-out sequences (their first 200), and refuse (BadInput: the
    file is kept) if training made it much worse."""
    if not sequences or not os.path.exists(path) or not is_checkpoint(path):
        return

    def loss(weights):
        try:
            return mean_token_loss(sequences[:200], weights, config)
        except (OverflowError, ValueError):      # weights too large to compute with
            return math.inf
    new, old = loss(weights), loss(weights_before)
    if not new <= WORSE_BY * old and math.isfinite(old):
        shown = f"{new:.4f}" if new < 1e6 else f"{new:.3g}"
        raise BadInput(f"training made the model much worse: its loss on {len(sequences[:200]):,} held-out sequences "
                       f"went from {old:.4f} to {shown}, so {path} was kept; try a smaller --lr than {config.lr}")


# ---------------------------------------------------------------------------------------
# GPT-2's tokenizer files (Part IV, IV.1)
# ---------------------------------------------------------------------------------------

def read_gpt2_tokenizer(folder):
    """GPT-2's Vocabulary, from the vocab.json and merges.txt of a folder laid out like
    Hugging Face's gpt2 repository, checked: BadInput saying what is wrong with a bad file.
    The checks make sure the list of tokens is the one Vocabulary builds: the 256 bytes,
    then merge n's token at id 256 + n, then the special tokens such as <|endoftext|>."""
    vocab_path, merges_path = os.path.join(folder, "vocab.json"), os.path.join(folder, "merges.txt")
    try:
        vocab = json.loads(read_data_file(vocab_path, "GPT-2 vocabulary (vocab.json)"))
    except (ValueError, RecursionError):
        raise BadInput(f"{vocab_path} is not JSON") from None
    if (not isinstance(vocab, dict) or not all(type(i) is int for i in vocab.values())
            or sorted(vocab.values()) != list(range(len(vocab)))):
        raise BadInput(f"{vocab_path} must map each token to an id, the ids being 0, 1, 2, ... without a gap")
    tokens = sorted(vocab, key=vocab.get)               # [vocab_size]: the token of each id
    byte_chars = bytes_to_unicode()
    if sorted(tokens[:256]) != sorted(byte_chars):
        raise BadInput(f"{vocab_path}: ids 0 to 255 must be the 256 byte tokens")
    merges = []
    for n, line in enumerate(read_data_file(merges_path, "GPT-2 merges (merges.txt)").split("\n"), start=1):
        line = line.rstrip("\r")
        if not line or (n == 1 and line.startswith("#version")):
            continue
        pair = tuple(line.split(" "))
        if len(pair) != 2 or not all(pair):
            raise BadInput(f"{merges_path} line {n}: expected two tokens separated by one space, not {line[:60]!r}")
        if 256 + len(merges) >= len(tokens) or tokens[256 + len(merges)] != pair[0] + pair[1]:
            raise BadInput(f"{merges_path} line {n}: the token of merge {len(merges)}, {pair[0] + pair[1]!r}, "
                           f"must have id {256 + len(merges)} in {vocab_path}")
        merges.append(pair)
    specials = tokens[256 + len(merges):]
    if not all(set(token) <= set(byte_chars) for token in specials):
        raise BadInput(f"{vocab_path}: the special tokens (the ids after the merges') must be written with byte characters")
    return Vocabulary(tokens[:256], merges, specials, byte_level=True)


def read_text_as_is(path):
    """A UTF-8 file's text exactly as it is (empty, blank or with a byte-order mark: a
    tokenizer must see every character), at most MAX_FILE_BYTES of it."""
    try:
        with open(path, "rb") as f:
            data = f.read(MAX_FILE_BYTES + 1)
    except FileNotFoundError:
        raise BadInput(f"file to tokenize not found: {path}") from None
    except IsADirectoryError:
        raise BadInput(f"{path} is a directory, not a file to tokenize") from None
    except OSError as e:
        raise BadInput(f"cannot read {path}: {e.strerror or e}") from None
    if len(data) > MAX_FILE_BYTES:
        raise BadInput(f"{path} is larger than {MAX_FILE_BYTES // 2**20} MB, the most microgpt reads")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise BadInput(f"{path} is not UTF-8 text (byte 0x{e.object[e.start]:02x} at offset {e.start})") from None


def learned_vocabulary(chars, texts, num_merges, config):
    """--bpe N: a Vocabulary of chars and N merges learned from texts (documents or the
    whole stream), saying what it learned and what it does to the length of the text."""
    started, size = time.perf_counter(), sum(map(len, texts))
    # The text cut into words, and their counts: 28 bytes per character measured, on 2.8 MB of English.
    try:
        check_memory(config, len(chars) + 1 + num_merges, 1, 40 * size)
    except BadInput as e:         # here the vocabulary is what grew: say so
        raise BadInput(f"{e} (or fewer --bpe merges than {num_merges:,})") from None
    if size > 2**20:
        print(f"learning {num_merges:,} merges...", flush=True)
    words = [word for text in texts for word in gpt2_pretokenizer().findall(text)]
    said = [started]

    def progress(done):     # every pass looks at every pair: thousands of merges take minutes
        now = time.perf_counter()
        if now - said[0] > 10 and done < num_merges:
            print(f"bpe: {done:,} of {num_merges:,} merges learned in {now - started:.0f} s", flush=True)
            said[0] = now
    vocab = Vocabulary(chars, learn_merges(words, num_merges, progress))
    tokens = sum(len(vocab.encode(text)) for text in texts)
    characters = sum(map(len, words))
    print(f"bpe: {len(vocab.merges):,} merges learned in {time.perf_counter() - started:.1f} s; "
          f"{characters:,} characters are {tokens:,} tokens ({characters / max(tokens, 1):.2f} characters per token)",
          flush=True)
    if len(vocab.merges) < num_merges:
        print(f"bpe: the text has no pair of tokens left to merge after {len(vocab.merges):,} merges")
    check_memory(config, len(vocab) + 1)
    return vocab


def loss_per_character(loss_per_token, sequences, chars, config):
    """The validation loss per character of held-out text rather than per token, so that a
    model with tokens of several characters can be compared with one of single characters:
    the total loss of the predictions divided by the characters they predicted (a closing
    BOS counts as one character, as a newline would)."""
    targets = [t for tokens in sequences for t in tokens[1:1 + min(config.block_size, len(tokens) - 1)]]
    return loss_per_token * len(targets) / sum(len(chars[t]) if t < len(chars) else 1 for t in targets)


def checked_vocabulary(chars, merges, bad):
    """The base characters of a checkpoint's BPE vocabulary, once its "merges" are checked
    against its "chars" (base characters, then one merged token per merge)."""
    if (not isinstance(merges, list) or not isinstance(chars, list)
            or not all(isinstance(m, list) and len(m) == 2 and all(isinstance(t, str) and t for t in m)
                       for m in merges)):
        raise bad('"merges" must be a list of [left, right] pairs of tokens')
    base = chars[:len(chars) - len(merges)]
    if chars[len(base):] != [left + right for left, right in merges]:
        raise bad('"chars" must end with one token per merge, in the order of "merges"')
    known = set(base)
    for left, right in merges:
        if left not in known or right not in known:
            raise bad(f"merge {left!r} + {right!r} uses a token not made before it")
        known.add(left + right)
    return base


def run_tokenize(args):
    """--gpt2 DIR --tokenize FILE: print FILE's GPT-2 token ids on one line."""
    if args.gpt2 is None:
        raise BadInput("--tokenize FILE needs --gpt2 DIR|NAME (a folder with GPT-2's vocab.json and merges.txt, "
                       "or a model's name)")
    if args.tokenize is None:
        raise BadInput("--gpt2 DIR needs --tokenize FILE (the text whose token ids to print)")
    if not args.gpt2 or not args.tokenize:
        raise BadInput("--gpt2 and --tokenize need a name, not an empty string")
    defaults = vars(make_parser().parse_args([]))      # any other option would be silently ignored
    others = [f"--{key.replace('_', '-')}" for key, value in vars(args).items()
              if key not in ("gpt2", "tokenize") and value != defaults.get(key, value)]
    if others:
        raise BadInput(f"{', '.join(others)}: not with --tokenize, which only prints the token ids of FILE")
    tokenizer = read_gpt2_tokenizer(gpt2_folder(args.gpt2, ("vocab.json", "merges.txt")))
    text = read_text_as_is(args.tokenize)
    if len(text) > 2**23:
        print(f"tokenizing {len(text):,} characters: about a second per megabyte", file=sys.stderr, flush=True)
    print(" ".join(map(str, tokenizer.encode(text))))
    return 0


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


def shown_path(path):
    """A path as the user would type it: relative to the current folder when the file is
    below it (names.txt, not the full path of the clone), otherwise as given; a character
    a terminal would act on (ESC, ...) shown as its escape, as visible() shows samples."""
    try:
        relative = os.path.relpath(os.path.abspath(path))
    except ValueError:                 # Windows: another drive has no relative path
        relative = os.pardir
    return visible(path if relative.startswith(os.pardir) else relative, keep="")


class ArgumentParser(argparse.ArgumentParser):
    def error(self, message):                    # one line, like every other error
        raise BadInput(f"{message} (see --help)")


LARGEST_COUNT = 10**12     # no size, step or sample count above this can be run (or estimated)


def ascii_arg(text):
    """The text of a number, refused unless written in ASCII without underscores: int() and
    float() also read other scripts' digits ("--steps \u0661\u0660" would be 10), which nobody
    means on a command line, and Python's digit separator ("1_000"), which the message's rule
    (the digits 0-9) does not allow."""
    if not text.isascii() or "_" in text:
        raise argparse.ArgumentTypeError(f"must be written with the digits 0-9, not {text[:20]!r}")
    return text


def seed_arg(text):
    """A whole number, 0 or more: Python's random takes a negative seed as its absolute
    value, so --seed -5 would silently train the same model as --seed 5."""
    digits = ascii_arg(text).lstrip("+-")
    if digits.isdigit() and len(digits) > 4000:        # int() refuses more than 4,300 digits
        raise argparse.ArgumentTypeError(f"is too large: {len(digits):,} digits")
    try:
        value = int(ascii_arg(text))
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a whole number, not {text[:20]!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, not {value}")
    return value


def float_arg(text):
    """A number such as 0.01 or 1e-3, in ASCII, that a float can hold (1e-400 is not 0)."""
    try:
        value = float(ascii_arg(text))
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number, not {text[:20]!r}") from None
    mantissa = text.lower().split("e")[0]
    if value == 0 and any(d in mantissa for d in "123456789"):
        raise argparse.ArgumentTypeError(f"{text[:20]} is too small to compute with: a float rounds it to 0")
    if math.isinf(value) and "inf" not in text.lower():
        raise argparse.ArgumentTypeError(f"{text[:20]} is too large to compute with: a float cannot hold it")
    return value


def count_arg(text):
    """A whole number for a size or a count, at most LARGEST_COUNT: a typo of many digits is
    refused here rather than overflowing the arithmetic that checks it."""
    try:
        value = int(ascii_arg(text))
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a whole number, not {text!r}") from None
    if value > LARGEST_COUNT:
        raise argparse.ArgumentTypeError(f"must be at most 10**12, not {text[:20]}{'...' * (len(text) > 20)}")
    return value


def batch_arg(text):
    if text == "all":
        return text
    ascii_arg(text)               # its own message: the rule for how a number is written
    try:
        return count_arg(text)
    except argparse.ArgumentTypeError:
        raise argparse.ArgumentTypeError(f"must be a whole number up to 10**12 or 'all', not {text[:20]!r}") from None


def make_parser():
    d = Config()
    p = ArgumentParser(prog="microgpt", description="Train a tiny GPT on a text file and sample from it. "
                       "Without options: learn from names.txt for 1000 steps and print 20 new names.")
    data = default_data_path().replace("%", "%%")   # argparse reads % in help as a format
    p.add_argument("--input", metavar="FILE", help="UTF-8 text file: one document per line, or one stream "
                   f"of text with --stream (default: {data})")
    p.add_argument("--stream", action="store_true", help="treat the input as one continuous text (newlines are "
                   "ordinary characters, no BOS) and train on random windows of block_size + 1 characters")
    p.add_argument("--steps", type=count_arg, metavar="N", help=f"training steps (default {d.steps}; "
                   "with --load the default is 0: only sample)")
    p.add_argument("--n-layer", type=count_arg, metavar="N", help=f"transformer blocks (default {d.n_layer})")
    p.add_argument("--n-embd", type=count_arg, metavar="N", help=f"embedding width (default {d.n_embd})")
    p.add_argument("--n-head", type=count_arg, metavar="N", help=f"attention heads, must divide n-embd (default {d.n_head})")
    p.add_argument("--block-size", type=count_arg, metavar="N", help=f"context length in tokens (default {d.block_size})")
    p.add_argument("--batch", type=batch_arg, metavar="N|all", help="documents or windows per "
                   f"step; 'all' uses every one at every step (default {d.batch})")
    p.add_argument("--lr", type=float_arg, metavar="F", help=f"Adam learning rate, decayed linearly "
                   f"over the run, to lr / steps at the last step (default {d.lr})")
    p.add_argument("--seed", type=seed_arg, metavar="N", help=f"random seed; the same seed and "
                   f"options give the same output (default {d.seed}; with --load, the checkpoint's)")
    p.add_argument("--temperature", type=float_arg, metavar="F", help="sampling temperature: lower is safer, "
                   f"higher is wilder; 0 always takes the likeliest token (default {d.temperature})")
    p.add_argument("--num-samples", type=count_arg, metavar="N", help=f"samples to print, 0 for none "
                   f"(default {d.num_samples}; 1 with --stream)")
    p.add_argument("--length", type=count_arg, metavar="N", help=f"characters per sample with --stream (default {d.length}), "
                   "tokens with --stream --bpe; tokens to write with --gpt2 (default 40)")
    p.add_argument("--prompt", metavar="TEXT", help="samples start with this text")
    p.add_argument("--save", metavar="FILE", help="save the trained model to this JSON file")
    p.add_argument("--load", metavar="FILE", help="start from a saved model (its shape, vocabulary, mode and "
                   "seed); --steps N then fine-tunes it: Adam goes on from its saved state, and the learning "
                   "rate from lr * N / (T + N) down to 0, T being the steps the model had (a short "
                   "fine-tuning makes small changes)")
    p.add_argument("--chain", nargs="?", const=True, metavar="FILE.dot", help="print the model as a Markov chain "
                   "over its contexts (stream mode, at most 256 states); with FILE.dot also write it for Graphviz")
    p.add_argument("--explain", metavar="TEXT", help="print the model's predictions and attention for each "
                   "position of TEXT")
    p.add_argument("--report", metavar="FILE.html", help="write one self-contained HTML page with pictures of "
                   "the run and the model (loss curve, embeddings, attention, samples)")
    # Remembering a run: stop with Ctrl-C, go on later.
    p.add_argument("--resume", metavar="FILE", help="continue the run that saved FILE when it was stopped (Ctrl-C, "
                   "SIGTERM) with the options it was started with, to the same numbers as if it never "
                   "stopped; saves to FILE again unless --save says otherwise")
    p.add_argument("--plain", action="store_true", help="run Part I of microgpt.py alone (FAST = False): "
                   "the same numbers to rounding, about 14 times slower")
    # --serve: the chat in a web page (Part VI, "Chat in the browser")
    p.add_argument("--serve", action="store_true", help="serve a chat page for a chat model given with --load, "
                   "until Ctrl-C")
    p.add_argument("--port", type=port_arg, metavar="N", help="--serve's port (default 8000; 0: any free port)")
    p.add_argument("--host", metavar="ADDR", help="--serve's address (default 127.0.0.1, this machine only; "
                   "another address lets other machines in, with a warning)")
    # the assistant (Part V)
    p.add_argument("--chat", action="store_true", help="train an assistant (pretraining, fine-tuning, "
                   "reinforcement learning: Part V), print its report card and chat with it in the terminal; "
                   "with --load of a chat model, only chat (one request per line of standard input)")
    # GPT-2 (Part IV): --gpt2 runs OpenAI's model; --prompt, --length, --temperature, --explain
    # and --report apply to it too.
    p.add_argument("--gpt2", metavar="DIR|NAME", help="run GPT-2 from a folder (config.json, vocab.json, merges.txt, "
                   "model.safetensors), or download one by name: " + ", ".join(HUB_MODELS))
    p.add_argument("--top-k", type=count_arg, metavar="K", help="GPT-2: draw only from the K likeliest tokens")
    p.add_argument("--ids", action="store_true", help="GPT-2: print the written token ids, not the text")
    # Tokens bigger than letters (Part IV, IV.1)
    p.add_argument("--bpe", type=count_arg, default=0, metavar="N", help="learn N byte-pair merges from the "
                   "training text and train on those tokens of several characters instead of single "
                   "characters (default 0: characters)")
    p.add_argument("--tokenize", metavar="FILE", help="with --gpt2: print the GPT-2 token ids of FILE's text, "
                   "space-separated, on one line (the text <|endoftext|> is encoded as ordinary text)")
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
    if not (math.isfinite(config.lr) and config.lr > 0):
        raise BadInput(f"--lr must be a positive number, not {config.lr}")
    if not (math.isfinite(config.temperature) and config.temperature >= 0):
        raise BadInput(f"--temperature must be 0 (greedy) or a positive number, not {config.temperature}")
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
    if args.report:
        for flag, other in (("--input", data), ("--load", args.load), ("--save", args.save),
                            ("--chain", args.chain)):
            if other and same_file(args.report, other):
                raise BadInput(f"--report {args.report} is the same file as {flag} {other}")
        check_can_write(args.report, is_microgpt_report, "page written by microgpt --report")


# Where Linux says how much memory a container may use: cgroup v2, then v1 (still common).
CGROUP_MEMORY_LIMITS = ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes")


def memory_limit():
    """The memory this process may use, in bytes: the machine's, or a container's or a
    ulimit's if smaller; None where it cannot be found out."""
    limits = []
    try:
        limits.append(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))    # Linux, macOS
    except (AttributeError, ValueError, OSError):
        pass
    for path in CGROUP_MEMORY_LIMITS:                                       # a Linux container
        try:
            with open(path, encoding="utf-8") as f:
                limits.append(int(f.read()))            # "max" (v2): no limit; v1 says a huge number
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


# Memory measured per interpreter (peak resident size; tests/test_attacks.py compares these
# estimates with measured peaks): the interpreter with microgpt loaded, and the documents
# held in memory per character of the file and per document (a string, a list of token ids,
# its places in three lists). PyPy's collector lets garbage pile up before freeing it.
INTERPRETER_BYTES = {"cpython": 36 * 2**20, "pypy": 85 * 2**20}
DOCUMENT_BYTES = {"cpython": (10, 180), "pypy": (70, 400)}      # (per character, per document)


def documents_bytes(characters, documents):
    """About how much memory a data file of documents takes, held as microgpt holds it."""
    per_char, per_doc = DOCUMENT_BYTES.get(sys.implementation.name, DOCUMENT_BYTES["pypy"])
    return per_char * characters + per_doc * documents


def check_memory(config, vocab_size, positions=1, data_bytes=0, data="the data"):
    """Refuse, before anything is allocated, a model that cannot fit in memory, saying how much
    it would need: the interpreter, about 200 bytes per parameter (its Value, Adam's two
    averages, a float copy), the graph of one document, and `data` (data_bytes, as held in
    memory), and what is the most of it."""
    e = config.n_embd
    n_params = (2 * vocab_size + config.block_size) * e + config.n_layer * 12 * e * e   # as param_shapes
    graph = graph_bytes(config, vocab_size, positions)
    # Room for two graphs, though train() keeps one at a time: the estimate is rough, and
    # running out of memory after an hour costs more than a refusal up front.
    model = 200 * n_params + 2 * graph
    if sys.implementation.name == "pypy":
        model *= 3    # its collector lets garbage pile up before it frees it: measured up to 3x
    base = INTERPRETER_BYTES.get(sys.implementation.name, INTERPRETER_BYTES["pypy"])
    need, limit = base + model + data_bytes, memory_limit()
    if limit is not None and need > limit:
        held = f", {format_bytes(data_bytes)} for {data} as held in memory" if data_bytes else ""
        fix = "data file (or --batch)" if data_bytes > model else "--n-embd, --n-layer or --block-size"
        raise BadInput(f"this would need about {format_bytes(need)} of memory ({n_params:,} parameters, "
                       f"{format_bytes(graph)} for one document's graph{held}), "
                       f"more than the {format_bytes(limit)} there is: choose a smaller {fix}")


PROGRESS_SECONDS = 10      # the longest any phase of a run goes without saying how far it got


class Progress:
    """How far a long phase (reading, encoding, checking, validating...) has got, printed at
    most every PROGRESS_SECONDS, and not at all by a phase that is over sooner: call
    .update(done) as the work goes. total None: the end is not known in advance."""

    def __init__(self, what, total=None, unit=""):
        self.what, self.total, self.unit = what, total, unit
        self.started = self.said = time.perf_counter()

    def update(self, done):
        now = time.perf_counter()
        if now - self.said < PROGRESS_SECONDS or (self.total is not None and done >= self.total):
            return
        if self.total is None:
            print(f"{self.what}: {done:,} {self.unit} so far", flush=True)
        else:
            left = (now - self.started) / max(done, 1) * (self.total - done)
            print(f"{self.what}: {done:,} of {self.total:,} {self.unit}, {left:.0f} s left", flush=True)
        self.said = now


def encode_documents(docs, chars):
    """[encode_document(doc, chars) for doc in docs], with the table from characters to ids
    built once: encode() builds it for every document, which costs as much as the vocabulary
    is large, for every line (hours, for a big file of thousands of distinct characters)."""
    if getattr(chars, "merges", None):
        return [encode_document(doc, chars) for doc in docs]     # Part IV's tokens of several characters
    bos, stoi = len(chars), {ch: i for i, ch in enumerate(chars)}
    return [[bos] + [stoi[ch] for ch in doc] + [bos] for doc in docs]


def with_progress(items, progress, every=1024):
    """The items, one by one, updating progress every `every` of them."""
    for i, item in enumerate(items):
        if i % every == 0:
            progress.update(i)
        yield item


def print_progress(step, num_steps, loss, smoothed, started, interactive, first=0, said=None):
    """The training progress line: raw and smoothed loss, time per step and time left. In a
    terminal it is rewritten in place about 100 times a run; in a log, printed 10 times; and
    in both, whenever PROGRESS_SECONDS have passed since the last one (printed at `said`), so
    that a long run is never silent for long. Returns when the last line was printed.
    first: the steps taken before `started` (by the run that --resume continues)."""
    now = time.perf_counter()
    every = max(1, num_steps // (100 if interactive else 10))
    due = said is not None and now - said >= PROGRESS_SECONDS
    if step % every and step not in (1, num_steps) and not due:
        return said
    ms = 1000 * (now - started) / (step - first)
    line = (f"step {step:{len(str(num_steps))}d}/{num_steps} | loss {loss:.4f} | smoothed {smoothed:.4f} | "
            f"{ms:.1f} ms/step | {ms * (num_steps - step) / 1000:.0f} s left")
    if interactive:      # back to the start of the line; two spaces cover a line that got shorter
        print("\r" + line + "  ", end="" if step < num_steps else "\n", flush=True)
    else:
        print(line, flush=True)
    return now


# How tokens, states and a loss curve are shown as text: display helpers for the command
# line and the page, not part of any lesson.

def sparkline(values, width=60, ascii_only=False):
    """A row of characters whose heights follow the values (averaged down to `width`). The
    first and last characters draw the first and last values themselves, the numbers the
    command line prints beside them, so the picture's ends agree with its labels. A spike
    (a learning rate too high) would squash the rest flat against the bottom, where an end
    three times the other could look lower than it: so the scale stops at twice the larger
    end, and anything above that gets the top character."""
    levels = "_.-:=+*#" if ascii_only else "\u2581\u2582\u2583\u2584\u2585\u2586\u2587\u2588"
    n = len(values)
    width = min(width, n)
    # Character i averages values i*n/width up to (i+1)*n/width: n values cut into `width`
    # runs as equal as whole numbers allow.
    buckets = [values[i * n // width:(i + 1) * n // width] for i in range(width)]
    means = [sum(b) / len(b) for b in buckets]
    ends = (values[0], values[-1])
    lo, hi = min(means + list(ends)), max(means)
    if max(ends) > 0:
        hi = max(lo, min(hi, 2 * max(ends)))
    means[0], means[-1] = ends
    span = (hi - lo) or 1.0          # all equal: any span gives the lowest level to all
    return "".join(levels[round((min(x, hi) - lo) / span * (len(levels) - 1))] for x in means)


def label(token, chars):
    """A short printable name for a token."""
    if token == len(chars):
        return "<BOS>"
    # Backslash escapes keep every label printable and distinct. As printed: a space is \s
    # (two characters, a backslash and s), a backslash \\, a newline \n, a tab \t, another
    # unprintable character \x07 or \u200b (Python's own escapes, from repr()); also inside
    # a token of several characters (Part IV), such as \sthe.
    return "".join({" ": "\\s", "\\": "\\\\"}.get(ch, ch if ch.isprintable() else repr(ch)[1:-1])
                   for ch in chars[token])


def caption_names(names, chars):
    """The tokens as a sentence writes them: bare where every token is one character (a, \\s,
    <BOS>), in quotes where a token can be several (Part IV's BPE), so that a list of them
    ('on' 'x' 'den') reads as tokens, not as words."""
    if all(len(c) == 1 for c in chars):
        return names
    return [n if n == "<BOS>" else f"'{n}'" for n in names]


def state_name(state, names):
    """A Markov chain state's name. names: every token's label (from label()), by token id.
    The state's labels are run together when every token is one character ("aab"), and
    separated by spaces when a token can be several characters (BPE), because "ab"+"a" and
    "a"+"ba" are different states. (label() writes a space as two characters, a backslash
    and s: such an escape still counts as one character.)"""
    # The pattern matches exactly label()'s escapes: \s, \\, \n and the like, \x07, \u200b.
    one_char = lambda name: len(name) == 1 or name == "<BOS>" or re.fullmatch(
        r"\\(s|\\|[a-z]|x[0-9a-f]{2}|u[0-9a-f]{4}|U[0-9a-f]{8})", name)
    several = not all(one_char(name) for name in names)
    return (" " if several else "").join(names[t] for t in state)


# Moves of the Markov chain less likely than this are left out of its pictures, on the
# page (chain_graph) and in the Graphviz file alike: at 1% an arrow is a hairline already.
CHAIN_MIN_PROBABILITY = 0.01


def print_chain(chain, chars, dot_path):
    """The Markov chain as an aligned table (and, with dot_path, as a Graphviz file: an
    arrow for each move at least CHAIN_MIN_PROBABILITY likely, as wide as its probability)."""
    names = [label(t, chars) for t in range(len(chain[0][1]))]
    name = lambda state: state_name(state, names)
    print(f"Markov chain: {len(chain)} states (contexts of {len(chain[0][0])} tokens)")
    print("state".ljust(max(5, len(name(chain[0][0])))) + "  next token: probability -> next state")
    for state, probs in chain:
        moves = "   ".join(f"{label(t, chars)}: {p:6.1%} -> {name(state[1:] + (t,))}" for t, p in enumerate(probs))
        print(name(state).ljust(max(5, len(name(state)))) + "  " + moves)
    if dot_path:
        quote = lambda text: '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'
        lines = [GRAPHVIZ_MARKER,
                 f"// moves less likely than {CHAIN_MIN_PROBABILITY:.0%} are left out (as on the --report page);",
                 "// an arrow's width (penwidth) is 0.5 + 5 times its probability",
                 "digraph markov_chain {"]
        for state, probs in chain:
            for t, p in enumerate(probs):
                if p >= CHAIN_MIN_PROBABILITY:
                    lines.append(f"  {quote(name(state))} -> {quote(name(state[1:] + (t,)))} "
                                 f"[label={quote(f'{label(t, chars)} ({p:.0%})')}, penwidth={0.5 + 5 * p:.2f}];")
        lines.append("}")
        try:
            check_can_write(dot_path, is_our_graphviz_file, "Graphviz file written by microgpt")   # again
            write_atomically(dot_path, "\n".join(lines) + "\n")
        except OSError as e:
            raise BadInput(f"cannot write {dot_path}: {e.strerror or e}") from None
        print(f"wrote {visible(dot_path, keep='')}")


def print_explanation(tokens, targets, weights, config, chars):
    """The microscope: predictions and losses per position, then attention heat maps."""
    rows = explain(tokens, weights, config)
    names = [label(t, chars) for t in tokens]
    table = []
    for pos, (probs, _) in enumerate(rows):
        top = sorted(range(len(probs)), key=lambda t: -probs[t])[:5]
        # two decimals, or one significant digit below 0.005 (a big vocabulary's guesses)
        guesses = "  ".join(f"{label(t, chars)} {probs[t]:.2f}" if probs[t] >= 0.005 else
                            f"{label(t, chars)} {probs[t]:.1g}" for t in top)
        target, nxt, loss = targets[pos], "", ""
        if target is not None:
            nxt = label(target, chars)
            loss = f"{-math.log(probs[target]):.3f}" if probs[target] > 0 else "inf"
        table.append((pos, names[pos], guesses, nxt, loss))
    # columns as wide as their longest entry (tokens of several characters, --bpe)
    wt, wg, wn = (max([least] + [len(row[k]) for row in table]) for k, least in ((1, 6), (2, 52), (3, 6)))
    print(f"{'pos':>3}  {'token':<{wt}} {'top 5 next-token predictions':<{wg}} {'next':<{wn}} loss")
    for pos, name, guesses, nxt, loss in table:
        print(f"{pos:>3}  {name:<{wt}} {guesses:<{wg}} {nxt:<{wn}} {loss}")
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
    for flag in ("input", "load", "save", "chain", "report", "resume"):   # an empty name would be silently ignored
        if getattr(args, flag) == "":
            raise BadInput(f"--{flag} needs a file name, not an empty string")
    if args.chain is True:
        args.chain = ""                     # --chain without a file name: print the chain only
    resumed = resume_options(args) if args.resume is not None else None   # and the run's options
    config = Config()
    for key in ("lr", "batch", "seed", "temperature"):   # options left out keep Config's defaults
        if getattr(args, key) is not None:
            setattr(config, key, getattr(args, key))
    checkpoint = resumed or (load_checkpoint(args.load) if args.load else None)
    if checkpoint:
        saved, mode = checkpoint[0], checkpoint[3]
        if mode == "chat":
            raise BadInput(f"{args.load} is a chat model: add --chat to talk to it")
        if args.seed is None:               # the seed the model was trained with: the same samples
            config.seed = saved_seed(checkpoint[4], config.seed)
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
    if config.steps == 0 and args.load:     # (a new model with --steps 0 is refused below)
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


def plural(n, word):
    """"1 document", "2 documents", "29,910 documents"."""
    return f"{n:,} {word}" + "s" * (n != 1)


def visible(text, keep="\n\t"):
    """Text as a terminal (or a page) should show it: every character that is not printable
    (NUL, ESC, the right-to-left override U+202E, ...) as its backslash escape, so that a
    model's samples cannot move the cursor, clear the screen or reverse the line."""
    return "".join(ch if ch.isprintable() or ch in keep else repr(ch)[1:-1] for ch in text)


def prepare_data(path, config, mode, chars, rng, bpe=0, text=None):
    """Read the training data and say what it is. chars is None for a new model, whose
    vocabulary comes from the data; text, if given, is the file's text, already read.
    Returns (text, chars, batch_for_step, validation sequences)."""
    # Line ends as a person sees them: Windows' \r\n and old Macs' \r are \n too.
    text = (read_data_file(path) if text is None else text).replace("\r\n", "\n").replace("\r", "\n")
    if mode == "stream":
        chars = chars or build_vocab(text)
        if bpe:
            chars = learned_vocabulary(chars, [text], bpe, config)
        # The text as token ids, twice (all, and the training part), and each step's windows.
        windows = (len(text) if config.batch == "all" else config.batch) * (64 + 8 * config.block_size)
        check_memory(config, len(chars), config.block_size, 20 * len(text) + windows)
        train_tokens, val_tokens = stream_split(encode_with_progress(path, text, chars), config.block_size)
        if len(train_tokens) < config.block_size + 1:
            what = "tokens (after --bpe)" if getattr(chars, "merges", None) else "characters"
            raise BadInput(f"{path} has {len(train_tokens)} {what}, fewer than block_size + 1 = "
                           f"{config.block_size + 1}")
        held_out = f"validating on the last {len(val_tokens):,}" if val_tokens else ""
        val_windows = stream_val_windows(val_tokens, config.block_size)
        if len(val_windows) > 1000:
            # As for documents, at most 1000: spread evenly over the held-out text, so the
            # number stays comparable while a long text is not validated for hours.
            val_windows = [val_windows[i * len(val_windows) // 1000] for i in range(1000)]
            held_out = f"validating on 1,000 windows spread over the last {len(val_tokens):,}"
        unit = " tokens" if getattr(chars, "merges", None) else ""     # Part IV's; else characters
        print(f"data: {plural(len(text), 'character')} from {shown_path(path)}; training on {len(train_tokens):,}{unit}, "
              + (held_out + unit if held_out else "too few to hold any out for validation"))
        return text, chars, window_batches(train_tokens, config.block_size, config.batch, rng), val_windows
    # Before the text is split (every line at most a document), and again with the longest one.
    lines = text.count("\n") + 1
    data_bytes, held = documents_bytes(len(text), lines), f"{plural(lines, 'line')} of data"
    check_memory(config, len(chars or set(text)) + 1, 1, data_bytes, held)
    docs = split_documents(text)
    chars = chars or build_vocab("".join(docs))
    check_memory(config, len(chars) + 1, min(config.block_size, max(map(len, docs)) + 1), data_bytes, held)
    check_known(path, "".join(docs), chars)  # every character must be in the vocabulary
    train_docs, val_docs = train_val_split(docs, rng)
    if bpe:     # learned from the training documents only, one at a time
        chars = learned_vocabulary(chars, train_docs, bpe, config)
    held_out = f"validating on {len(val_docs):,}" if val_docs else ""
    print(f"data: {plural(len(docs), 'document')} from {shown_path(path)}; training on {len(train_docs):,}, "
          + (held_out or "too few to hold any out for validation"), flush=True)
    progress = Progress(f"encoding {path}", len(train_docs), "documents")
    return (text, chars, document_batches(encode_documents(with_progress(train_docs, progress), chars),
                                          config.batch), encode_documents(val_docs, chars))


def explain_tokens(text, chars, config, mode):
    """The inputs and targets for --explain: a document is read from BOS and ends with BOS,
    a stream is read as it is (its last token has no target)."""
    if not text:
        raise BadInput("--explain needs a text to explain, not an empty string")
    ids = encode_for("--explain", text, chars)
    if mode == "docs":
        inputs, targets = [len(chars)] + ids, ids + [len(chars)]
    else:
        inputs, targets = ids, ids[1:] + [None]
    if not 1 <= len(inputs) <= config.block_size:
        longest = config.block_size - (1 if mode == "docs" else 0)
        if longest < 1:
            raise BadInput("--explain needs a block_size of at least 2 for a model of documents")
        unit = f"tokens (it is {len(ids)})" if getattr(chars, "merges", None) else "characters"
        raise BadInput(f"--explain text must be 1 to {longest} {unit} for a context of {config.block_size}")
    return inputs, targets


def report_recorder(record, params, config, mode, chars, val_seqs, prompt, stream_start, subset_size=None,
                    should_stop=lambda: False):
    """For --report: an on_step for train_with_progress that keeps every step's loss in
    record; the loss on a fixed subset of the held-out data at steps 0, 1, 2, 5, 10, 20, 50,
    ... (spread evenly on the page's logarithmic step axis) and at each fifth of the run; and
    at five steps (0, 5%, 20%, 50%, the end) samples drawn with the final samples' seed. At
    the last step it also measures the validation loss on all of val_seqs (val_loss, over
    val_count sequences): the number the run prints, which the checkpoint keeps for the page
    of the loaded model. Only --report and --save pay for this (--save keeps it). That last
    validation (seconds with a large vocabulary) is cut short if should_stop() turns true: the
    run has all its steps, and a stop signal must save it, not wait (the page then gives no
    validation loss). The points before it are never cut: a resumed run must record exactly
    what an uninterrupted one does."""
    n = config.steps
    val_steps = {m * 10 ** e for e in range(13) for m in (1, 2, 5) if m * 10 ** e < n}
    val_steps |= {round(n * k / 5) for k in range(6)}
    sample_steps = {0, round(n * 0.05), round(n * 0.2), round(n * 0.5), n}
    subset = val_seqs[:subset_size or (200 if mode == "docs" else 100)]
    record.update(losses=[], val_points=[], snapshots=[], snapshot_seconds=0.0, val_subset=len(subset))

    def on_step(step, loss):
        if loss is not None:
            record["losses"].append(loss)
        if step not in val_steps and step not in sample_steps:
            return
        started = time.perf_counter()
        weights = inference_weights(params)
        try:          # weights too large to compute with (a diverging run) leave no point
            if step in val_steps and subset:
                val_loss = validation_loss(subset, weights, config)
                if math.isfinite(val_loss):
                    record["val_points"].append((step, val_loss))
            if step == n and val_seqs:
                val_loss = validation_loss(val_seqs, weights, config, should_stop)
                if val_loss is not None:
                    record.update(val_loss=val_loss, val_count=len(val_seqs))
            if step in sample_steps:
                samples = draw_samples(weights, config, chars, mode, prompt, stream_start,
                                       5 if mode == "docs" else 1, min(config.length, 80))
                record["snapshots"].append({"step": step, "samples": [decode(s, chars) for s in samples]})
        except (OverflowError, ValueError):
            pass
        record["snapshot_seconds"] += time.perf_counter() - started
    return on_step


def history_of(history):
    """A checkpoint's "history" (or the "earlier" in it) in report_recorder's shapes; {} when it
    keeps none, or keeps it in a shape we do not know (the page then says there is no loss
    curve). Its steps count from the start of its run, or, with "first", are whole-model steps
    whose first loss is step first + 1."""
    if not isinstance(history, dict):
        return {}
    losses, val, snaps = history.get("losses"), history.get("val_points", []), history.get("snapshots", [])
    number = lambda x: is_finite_number(x) and type(x) is not bool
    well_formed = (isinstance(losses, list) and losses and all(map(number, losses))
                   and isinstance(val, list) and all(isinstance(v, (list, tuple)) and len(v) == 2
                                                     and type(v[0]) is int and number(v[1]) for v in val)
                   and isinstance(snaps, list) and all(isinstance(s, dict) and type(s.get("step")) is int
                                                       and isinstance(s.get("samples"), list) and s["samples"]
                                                       and all(isinstance(x, str) for x in s["samples"])
                                                       for s in snaps))
    if not well_formed:
        return {}
    count = lambda key: history.get(key) if type(history.get(key)) is int and history[key] >= 0 else None
    out = {"losses": [float(x) for x in losses], "val_points": [(v[0], float(v[1])) for v in val],
           "snapshots": [{"step": s["step"], "samples": list(s["samples"])} for s in snaps],
           "val_subset": count("val_subset")}
    if "first" in history:
        out["first"] = count("first") or 0
    # A history edited by hand may not add up; then it is not drawn at all (a loss of -1e308
    # would print as 309 digits): every loss from 0 to LARGEST_LOSS, and every point and
    # sample at a step of the run (from its start, step `first`, to its last loss).
    start = out.get("first", 0)
    end = start + len(out["losses"])
    sane = lambda loss: 0 <= loss <= LARGEST_LOSS
    if not (all(map(sane, out["losses"]))
            and all(start <= step <= end and sane(loss) for step, loss in out["val_points"])
            and all(start <= snap["step"] <= end for snap in out["snapshots"])):
        return {}
    if number(history.get("val_loss")) and sane(history["val_loss"]) and count("val_count"):
        out.update(val_loss=float(history["val_loss"]), val_count=history["val_count"])
    return out


# No model has a mean loss per token above this (its probability of the right token would be
# e**-1e6); a history that holds one was not written by a run.
LARGEST_LOSS = 1e6


def continued(earlier, own, first):
    """One history from a run's own (its steps counted from its start, at the model's step
    `first`) and the history of the runs before it (earlier, in model steps, or None): the
    loss of every step, in order, and all the validation points and samples, in model steps
    (first: the step before the first loss). A point the run measured at its start is the
    earlier run's last: it is kept once."""
    val = [(first + step, loss) for step, loss in own["val_points"]]
    snaps = [dict(snap, step=first + snap["step"]) for snap in own["snapshots"]]
    out = {"first": first, "losses": list(own["losses"]), "val_points": val, "snapshots": snaps,
           "val_subset": own.get("val_subset")}
    if earlier and earlier["first"] + len(earlier["losses"]) == first:
        seen_val, seen_snap = {s for s, _ in earlier["val_points"]}, {s["step"] for s in earlier["snapshots"]}
        out.update(first=earlier["first"], losses=earlier["losses"] + out["losses"],
                   val_points=list(earlier["val_points"]) + [p for p in val if p[0] not in seen_val],
                   snapshots=list(earlier["snapshots"]) + [s for s in snaps if s["step"] not in seen_snap])
        if earlier.get("val_subset") != own.get("val_subset"):
            out["val_subset"] = None          # points on different subsets: the page does not give one count
    return out


def remembered_history(raw):
    """The whole history of a checkpoint's model, for the page of a loaded model and for a run
    that goes on training it: its last run's (history_of), after the earlier runs' that the
    checkpoint keeps, in model steps (see continued), with the validation loss the last run
    printed (val_loss over val_count held-out sequences) if it kept it; {} if none."""
    history = raw.get("history")
    own = history_of(history)
    if not own:
        return {}
    training = raw.get("training")
    steps = training.get("steps") if isinstance(training, dict) else None
    done = len(own["losses"])
    # The history must be one loss per step of the training the checkpoint records: no more
    # than its model's steps, and, if it keeps its run, as many as Adam's updates in that run.
    run, adam = raw.get("run"), raw.get("optimizer")
    if (type(steps) is int and 0 <= steps < done
            or isinstance(run, dict) and isinstance(adam, dict) and is_count(run.get("start"))
            and is_count(run.get("steps")) and is_count(adam.get("step"))
            and (adam["step"] != run["start"] + done or done > run["steps"])):
        return {}
    first = max(0, steps - done) if type(steps) is int and 0 <= steps <= 10**18 else 0
    earlier = history_of(history.get("earlier"))
    out = continued(earlier if "first" in earlier else None, own, first)
    out.update({key: own[key] for key in ("val_loss", "val_count") if key in own})
    return out


class Stopped(KeyboardInterrupt):
    """Ctrl-C or SIGTERM, raised where the run must stop at once. args[0]: the signal."""


class StopSignals:
    """What Ctrl-C (SIGINT), SIGTERM (sent by kill, timeout, schedulers) and SIGHUP do. While
    `finishing` is set (from the start of training until the model is saved), the first one
    only asks the run to stop after the current step (or, in a step of several documents,
    before its next document: the step is then given up, see StoppableBatch; after the last
    step, it cuts the check of the model's scores short), so the model is whole when it is
    saved, and saved soon; at any other time, and the second time, it stops at once (raising
    Stopped). While the model is being saved, they are held (stop_signals_held) and handled
    once it is written."""

    def __init__(self):
        self.signum = None          # the first stop signal received, if any
        self.finishing = False
        self.when = "after this step"   # when a first signal stops a run that is finishing
        self.stopping = False       # Stopped has been raised: the run is on its way out
        self.leaving = False        # main() is putting the old handlers back: raise nothing now
        self.late = None            # a signal that came then: main() says it and exits as it asks
        self.unwritten = None       # what main() says after a stop that left a page unwritten
        self.redo = None            # and how to redo the chat stage it cut (see chat_pipeline)

    def __call__(self, signum, frame):
        if self.stopping:           # more signals while stopping change nothing (a traceback
            return                  # from a second Stopped inside the first one's cleanup)
        if self.leaving:            # a Stopped here would escape main() as a traceback
            self.late = self.late or signum
            return
        first = self.signum is None
        self.signum = self.signum or signum
        if not (first and self.finishing):
            self.stopping = True
            raise Stopped(signum)
        # A document can be long (--block-size 1000): say at once that the signal was heard.
        print(f"\nmicrogpt: stopping {self.when} (Ctrl-C again stops at once)", file=sys.stderr, flush=True)

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


def exit_program(code):
    """End the program with exit code `code`, and never be killed silently on the way out.
    Python's own shutdown first puts back the default action of the stop signals and then
    takes a while to free everything (the model's millions of objects): a second Ctrl-C in
    that moment would kill the process without a word (exit status -2 to Python, 130 with no
    message to a shell). So: print what is left while the top of the file's quit_quietly
    still answers a signal, then hold the signals, say a signal that came meanwhile, as
    quit_quietly does, and leave at once (os._exit: there is nothing left to tidy)."""
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except Exception:             # a closed pipe: the lost output is no reason to wait
            pass
    numbers = {getattr(signal, name) for name in ("SIGINT", "SIGTERM", "SIGHUP") if hasattr(signal, name)}
    try:
        signal.pthread_sigmask(signal.SIG_BLOCK, numbers)
        pending = signal.sigpending() & numbers
    except (AttributeError, ValueError, OSError):      # Windows: the usual shutdown
        sys.exit(code)
    if pending:
        signum = min(pending)
        os.write(2, f"\nmicrogpt: interrupted by {signal.Signals(signum).name}\n".encode())
        code = 128 + signum
    os._exit(code)


def interrupt_myself(stop):
    """Send this process a real SIGINT, as Ctrl-C would, and wait until its handler has run:
    the tests of --resume stop a run at a step of their choosing this way."""
    os.kill(os.getpid(), signal.SIGINT)
    for _ in range(1000):                 # a handler runs between two bytecodes; sleep lets it
        if stop.signum is not None:
            return
        time.sleep(0.001)


def train_with_progress(params, config, batches, stop, on_step=None, adam=None, earlier=()):
    """Train, printing progress. Returns (smoothed losses, how a stop signal ended it early:
    False if none did, "after" a step, or "during" one, which was given up).
    on_step(step, loss), if given, is called before the first step (step 0, loss None) and
    after every step: --report uses it to record the run. adam: Adam's state to go on from
    (train()'s; a model that had steps before this run counts them, so the learning rate
    goes on down its line, stretched to end config.steps later). earlier: the losses of the
    steps this run took before it was stopped (--resume goes on from there)."""
    losses = list(earlier)
    smoothed = [sum(losses[max(0, i - 99):i + 1]) / len(losses[max(0, i - 99):i + 1]) for i in range(len(losses))]
    first = len(losses)
    adam = adam or {"m": [0.0] * len(flatten(params)), "v": [0.0] * len(flatten(params)), "step": 0}
    end = adam["step"] - first + config.steps      # Adam's step count when this run is done
    interactive = sys.stdout.isatty()
    stop_at = os.environ.get("MICROGPT_STOP_AFTER_STEP")   # for the tests: a Ctrl-C after that step
    if on_step and not first:
        on_step(0, None)
    started = said = time.perf_counter()
    try:
        for step, loss in enumerate(train(params, config, batches, end, adam), start=first + 1):
            if not math.isfinite(loss):
                raise BadInput(f"training diverged: the loss became {loss} at step {step} "
                               f"(try a smaller --lr than {config.lr}); nothing was saved")
            losses.append(loss)
            smoothed.append(sum(losses[-100:]) / len(losses[-100:]))   # one document is noisy
            said = print_progress(step, config.steps, loss, smoothed[-1], started, interactive, first, said)
            if on_step:                  # its time is not training time: leave it out of ms/step
                before = time.perf_counter()
                on_step(step, loss)
                started += time.perf_counter() - before
            if str(step) == stop_at:
                interrupt_myself(stop)
            if stop.signum is not None and step < config.steps:
                return smoothed, "after"
    except StepAbandoned:            # a stop signal in a long step: see StoppableBatch
        for p in flatten(params):
            p.grad = 0.0
        return smoothed, "during"
    elapsed = time.perf_counter() - started
    done = f"{config.steps}" if not first else f"the last {config.steps - first} of {config.steps}"
    # With --batch all each step's loss is on all the data, exact: the last step's is the
    # model's loss, and a mean with earlier steps' would only make it look worse than it is.
    exact = config.batch == "all"
    print(f"trained {done} step{'s' * (first > 0 or config.steps != 1)} in {elapsed:.1f} s "
          f"({1000 * elapsed / (config.steps - first):.1f} ms/step); "
          + (f"loss {losses[-1]:.4f} (the last step's, on all the data: nothing to smooth)" if exact
             else f"smoothed loss {smoothed[-1]:.4f}"))
    ascii_only = not can_print("\u2581\u2588")
    curve = losses if exact else smoothed
    print(f"loss curve: {curve[0]:.2f} {sparkline(curve, ascii_only=ascii_only)} {curve[-1]:.2f}")
    return smoothed, False


def write_report(args, run):
    """--report: describe the run in words, pick the final samples and the examples to look
    inside, and write the page (report_page) atomically."""
    config, mode, text, val_seqs = run["config"], run["mode"], run["text"], run["val_seqs"]
    # The page says "names" only for the shipped names.txt (for a loaded model, if its checkpoint
    # records that it was trained on it); any other data is "documents", as the terminal says:
    # see sequence_word.
    trained_on = run.get("trained_on") if config.steps == 0 else None
    run["names_data"] = mode == "docs" and (
        is_shipped_names(trained_on) if config.steps == 0
        else same_file(args.input or default_data_path(), default_data_path()))
    kind = sequence_word(run)
    if config.steps > 0:
        data_path = args.input or os.path.basename(default_data_path())   # no machine paths on the page
        size = f"{len(text):,} characters" if mode == "stream" else f"{len(split_documents(text)):,} {kind}s"
        held_out = f"{len(val_seqs):,} held-out {kind}s for validation" if val_seqs else "too few to hold any out"
        run["data"] = f"{data_path}: {size}, {held_out}"
        run["training"] = (f"{config.steps:,} step{'s' * (config.steps > 1)} (batch {config.batch}, lr {config.lr}, seed {config.seed}) in "
                           f"{run['seconds']:.1f} s" + (f", after {plural(run['steps_before'], 'earlier step')}"
                                                        if run["steps_before"] else ""))
        shown = run["first"] + len(run["losses"])
        if shown > config.steps:           # a fine-tuned model's history goes on from the runs before
            run["training"] += f"; the loss curve shows all {shown:,} steps from step {run['first']:,}"
        if not run["steps_before"] and val_seqs:       # how much of its data the model has read (gap_above)
            run["read"] = data_read(config, mode, text, val_seqs, run["chars"], kind,
                                    same_file(args.input or default_data_path(), default_data_path()))
    elif trained_on:                       # what the checkpoint records: the file's path and SHA-256
        data_path = os.path.basename(trained_on["input"])
        size = ""
        try:                               # the shipped names, counted (if they can be read)
            size = f": {len(split_documents(read_text(default_data_path()))):,} names" + (
                f", {run['val_count']:,} held-out names for validation" if run.get("val_count") else "")
        except (OSError, UnicodeDecodeError):
            size = ""
        size = size if run["names_data"] else ""
        run["data"] = (f"{data_path}{size} (as {os.path.basename(args.load)} records it, SHA-256 "
                       f"{trained_on['data_sha256'][:12]}...): the model was loaded from {args.load}, "
                       "not trained in this run")
    else:
        data_path = args.load
        run["data"] = f"none: the model was loaded from {args.load}, whose checkpoint does not record its data"
    if config.steps == 0:
        run["training"] = f"none in this run ({plural(run['steps_before'], 'step')} before it was saved)"
        if run["losses"]:
            run["training"] += ("; the loss curve and the samples during training below are from those steps, "
                                "as the checkpoint remembers them")
    run["data_name"] = os.path.basename(data_path)
    if trained_on:
        run["data_name"] += f" (the model in {os.path.basename(args.load)})"
    for key in ("data", "data_name"):          # a file's name may hold any character: ESC, U+202E, ...
        run[key] = visible(run[key], keep="")
    run["batch"] = f"all {kind}s" if config.batch == "all" else f"{config.batch} {kind}" + "s" * (config.batch > 1)
    if config.steps == 0:
        run["batch"] = f"that step's {kind}s"      # how the saved model was trained is not remembered
    run["interpreter"] = f"{sys.implementation.name} {sys.version.split()[0]} on {sys.platform}"
    # The samples the run printed (or, with --num-samples 0, a few drawn the same way), as
    # the token ids drawn, and as text.
    run["sample_ids"] = draw_samples(run["weights"], config, run["chars"], mode, run["prompt"], run["stream_start"],
                                     config.num_samples or (10 if mode == "docs" else 1), config.length)
    run["samples"] = [decode(ids, run["chars"]) for ids in run["sample_ids"]]
    run["examples"] = example_sequences(mode, config, run["chars"], run["explain_io"], val_seqs, text,
                                        run["sample_ids"])
    write_page(args.report, report_page(run))


def write_page(path, page):
    """Write a --report page atomically, where only a page microgpt wrote may be replaced:
    checked again right before writing, since a file may have appeared there during
    training (it is kept). A page that cannot be written there, the result of minutes of
    training, goes to a new file of its own, and the error says where."""
    try:
        try:
            check_can_write(path, is_microgpt_report, "page written by microgpt --report")
            write_atomically(path, page)
        except OSError as e:
            raise BadInput(f"cannot write {visible(path, keep='')}: {e.strerror or e}") from None
    except BadInput as e:
        rescued = write_rescue_copy(".html", lambda new: write_atomically(new, page), "the page")
        raise BadInput(f"{e}; the page was written to {visible(rescued, keep='')} instead") from None
    say_saved(f"wrote {visible(path, keep='')}")     # on stderr too if stdout is gone (| head)


def data_read(config, mode, text, val_seqs, chars, kind, shipped_names):
    """For the loss caption (gap_above): how much training data a run of config.steps steps
    has trained on, how much there is, its unit, and how the held-out part was chosen. A step
    trains on `batch` documents, in order, or on `batch` random windows of block_size targets
    each ("all": all of them)."""
    batch = None if config.batch == "all" else config.batch
    if mode == "docs":
        size = len(split_documents(text)) - len(val_seqs)
        return (config.steps * (batch or size), size, kind,
                f"The held-out {kind}s are a random sample of the data, and each step's training loss is measured "
                f"before the model learns from that step's {kind}s, which are new to it too: so the gap is chance, "
                f"from which {kind}s each side happened to get.")
    tokens = len(encode(text, chars))     # quick: a --bpe vocabulary keeps each word it encoded
    size = tokens - tokens // 10          # stream_split's training part
    unit = "token" if getattr(chars, "merges", None) else "character"
    held_out = ("The held-out windows may simply differ from the training ones: in a stream they are the end of "
                "the file, which need not read like the rest")
    if shipped_names:
        held_out += "; names.txt lists the most common names first, so its end holds the rarest ones"
    return (config.steps * (batch or size - config.block_size) * config.block_size, size, unit, held_out + ".")


def is_shipped_names(trained_on):
    """Whether a checkpoint's "run" (its data's path and SHA-256, or None) records the shipped
    names.txt: the same text (by its SHA-256), or, if that cannot be read, the same path."""
    if not trained_on:
        return False
    try:
        return data_digest(read_text(default_data_path())) == trained_on["data_sha256"]
    except (OSError, UnicodeDecodeError):
        return same_file(trained_on["input"], default_data_path())


WRECK_MIN_TOKENS = 100     # the fewest predictions the final smoothed loss must be over to judge it


def check_not_wrecked(smoothed, vocab_size, lr, tokens=None):
    """Refuse to keep a model that training made worse than it started. A learning rate far
    too large throws the weights about: the loss shoots up and, even if it comes down again,
    often ends many times higher than where it began. On names.txt, 1000 steps end with a
    smoothed loss of 2.40 at --lr 0.01, 2.44 at 0.05, 2.75 at 0.3 (all below the 3.49 they
    start at), but 10.4 at 0.5 and 22.7 at 1. So the rule: ending above 1.5 times the
    starting loss (or uniform guessing, ln vocab_size, if that is higher) is a wreck.
    But only if the final smoothed loss is a mean over at least WRECK_MIN_TOKENS predictions
    (`tokens`, those of its last 100 steps): over a handful (5 steps of one token each, at
    --block-size 1) one unlikely character is enough to pass 1.5 times ln 2, and that is noise."""
    if tokens is not None and tokens < WRECK_MIN_TOKENS:
        return
    start = max(smoothed[0], math.log(vocab_size))
    if smoothed[-1] > 1.5 * start:
        raise BadInput(f"training wrecked the model: its smoothed loss ended at {smoothed[-1]:.2f}, far above "
                       f"the {smoothed[0]:.2f} it started at (uniform guessing: {math.log(vocab_size):.2f}); "
                       f"try a smaller --lr than {lr}; nothing was saved")


class StepAbandoned(Exception):
    """A stop signal came during a step of several documents: the step is given up."""


def counting_predictions(batch_for_step, config, counts, stop, rng):
    """batch_for_step, also appending to counts how many predictions each step's batch holds.
    Each batch is a StoppableBatch, and counted.rng_state keeps rng's state from before the
    step drew its windows (stream mode), to be put back if the step is given up."""
    # For the tests: MICROGPT_STOP_DURING_STEP=k:d, a Ctrl-C after document d of step k.
    step_doc = os.environ.get("MICROGPT_STOP_DURING_STEP", ":").split(":")

    def counted(step):
        counted.rng_state = rng.getstate()
        batch = batch_for_step(step)
        counts.append(sum(min(config.block_size, len(tokens) - 1) for tokens in batch))
        # a long step (--batch all) says how far it has got, too
        progress = Progress(f"step {step + 1}", len(batch), "sequences") if len(batch) > 100 else None
        stop_after = int(step_doc[1]) if step_doc[0] == str(step + 1) else None
        return StoppableBatch(batch, stop, progress, stop_after)
    return counted


class StoppableBatch(list):
    """A step's batch that, as train() goes through it, updates a Progress (if given) and
    gives the step up (raising StepAbandoned) before its next document once a stop signal has
    come: a step of all 28,910 names takes minutes, too long to wait for under `timeout -k`
    or `docker stop`. The step's gradient is then only partly summed, and Adam has not used
    it: the model and Adam's state are still those after the step before (train_with_progress
    clears the gradient). A step of one document is never given up: it is as long as the
    wait for the next document would be."""

    def __init__(self, batch, stop, progress=None, stop_after=None):
        super().__init__(batch)
        self.stop, self.progress, self.stop_after = stop, progress, stop_after

    def __iter__(self):
        for i, tokens in enumerate(super().__iter__()):
            if i == self.stop_after:
                interrupt_myself(self.stop)
            if self.stop.signum is not None and len(self) > 1:
                raise StepAbandoned(i)
            if self.progress and i % 16 == 0:
                self.progress.update(i)
            yield tokens


def validation_loss(sequences, weights, config, should_stop=lambda: False):
    """mean_token_loss (the same number, summed in the same order), but saying how far it has
    got every 10 seconds, so that a long validation is never silent. None if should_stop()
    turns true before it is done (a stop signal: the run must save, not finish this)."""
    losses, progress = [], Progress("validating", len(sequences), "held-out sequences")
    for i, tokens in enumerate(sequences, start=1):
        if should_stop():
            return None
        losses.extend(float(loss) for loss in sequence_losses(tokens, weights, config))
        progress.update(i)
    return sum(losses) / len(losses)


def print_samples(weights, config, chars, mode, prompt, stream_start):
    """num_samples new names (or texts, in stream mode)."""
    # Sampling has its own random stream, so the samples depend only on the weights and the
    # seed: a loaded checkpoint prints the same samples as the run that saved it.
    rng = random.Random(config.seed + 1)
    if config.num_samples:
        print(f"--- {config.num_samples} sample{'s' if config.num_samples > 1 else ''} "
              f"(temperature {config.temperature}{': always the likeliest token' * (config.temperature == 0)}) ---")
    for i in range(config.num_samples):
        if output_lost():                 # nobody reads them any more: stop
            return
        if mode == "docs":
            sample = sample_document(weights, config, chars, rng, config.temperature, prompt)
            # An empty sample (the model wrote the end at once) says so, not a blank.
            print(f"sample {i + 1:2d}: {visible(sample, keep='') or '(empty: it ended at once)'}")
        else:
            start = encode(prompt or stream_start, chars)
            print(visible(decode(start, chars)), end="", flush=True)
            # Each character as soon as it is drawn: a long sample is never a long silence.
            for token in sample_stream(weights, config, rng, config.temperature, start, config.length):
                print(visible(chars[token]), end="", flush=True)
                if output_lost():
                    return
            print()
            if i + 1 < config.num_samples:
                print("---")


def run(args, stop=None):
    """The main job: load or build a model, train it, report, sample. Returns the exit code."""
    stop = stop or StopSignals()
    if args.serve or args.port is not None or args.host is not None:
        return run_serve(args, stop)
    if args.chat:
        return run_chat(args, stop)          # Part V's assistant (and Part VI's "The assistant")
    if args.tokenize is not None:           # GPT-2's tokenizer (Part IV)
        return run_tokenize(args)
    if args.gpt2 is not None:               # GPT-2 itself (Part IV)
        return run_gpt2(args)
    if args.top_k is not None or args.ids:
        raise BadInput("--top-k and --ids apply to GPT-2 (--gpt2)")
    if args.bpe < 0:
        raise BadInput(f"--bpe must be 0 (single characters) or more merges, not {args.bpe}")
    config, mode, checkpoint = settings(args)
    save_was = file_identity(args.save) if args.save else None     # what --save would replace, if anything
    rng = random.Random(config.seed)
    chars, params, text, val_seqs, raw = None, None, None, [], {}
    if checkpoint:
        _, chars, params, _, raw = checkpoint
        if args.bpe:
            raise BadInput("--bpe makes a new vocabulary: a loaded model keeps its own")
    else:
        check_memory(config, vocab_size=2)    # an impossible shape is refused before reading the data
    if config.steps > 0:
        text, chars, batches, val_seqs = prepare_data(args.input or default_data_path(), config, mode, chars, rng,
                                                      args.bpe)
    vocab_size = len(chars) + (1 if mode == "docs" else 0)
    if checkpoint:          # every model that samples, explains or is trained on has finite scores
        check_finite_scores(inference_weights(params), config, f"{args.load}: the model's scores are not "
                            "finite numbers: its weights are too large to compute with")
    # Stream samples without a prompt start from the first character of the text.
    stream_start = text[0] if text else raw.get("stream_start", chars[0])

    # Check everything asked of the model before spending time on training it.
    prompt = args.prompt or ""
    prompt_tokens = len(encode_for("--prompt", prompt, chars))
    if prompt_tokens >= config.block_size and mode == "docs":
        size = f"{prompt_tokens} tokens" if getattr(chars, "merges", None) else f"{len(prompt)} characters"
        raise BadInput(f"--prompt is {size}; it must be shorter than block_size "
                       f"({config.block_size}) to leave room to generate")
    if args.explain is not None:
        explain_inputs, explain_targets = explain_tokens(args.explain, chars, config, mode)
    if args.chain is not None and vocab_size ** config.block_size > 256:
        raise BadInput(f"--chain needs at most 256 states; this model has {vocab_size}**{config.block_size}")

    n_params = sum(rows * cols for rows, cols in param_shapes(config, vocab_size).values())
    print(f"model: {n_params:,} parameters, vocabulary of {vocab_size:,} tokens, "
          + ", ".join(f"{key} {getattr(config, key)}" for key in MODEL_SHAPE), flush=True)
    if args.save:
        check_checkpoint_size(n_params, chars, args.save, config)
    params = params or init_params(config, vocab_size, rng)

    # A fine-tuned model's checkpoint counts the steps of the run that saved it too.
    steps_before = raw.get("training", {}).get("steps", 0) if isinstance(raw.get("training"), dict) else 0
    # A count no run could have reached (a hand-edited file: say 4,300 digits) is not carried on:
    # it could not even be written back (Python refuses to print integers that long).
    steps_before = steps_before if type(steps_before) is int and 0 <= steps_before <= 10**18 else 0
    if config.steps > 0:                    # Adam's state, and the run so far when resuming
        adam, history = training_state(args, raw, params, rng, text)
        done = len(history["losses"]) if history else 0
        steps_before -= done
        run_start = adam["step"] - done     # Adam's step count when this run began
        weights_before = weights_of(params)   # for judge_before_replacing
        if args.resume:
            print(f"resuming the run saved in {args.resume}: {done:,} of its {config.steps:,} steps done")
        elif checkpoint:
            say_how_fine_tuning_goes(config, adam, steps_before)

    def save(steps_done):
        if args.save:
            extra = {"training": {"steps": steps_before + steps_done, "seed": config.seed, "lr": config.lr}}
            if mode == "stream":
                extra["stream_start"] = stream_start
            extra.update(remembered(record, adam, rng, run_options(args, config, mode, run_start, text)))
            judge_before_replacing(args.save, inference_weights(params), weights_before, config,
                                   val_seqs or judge_sequences(text, chars, config, mode))
            if getattr(chars, "merges", None):
                extra["merges"] = [list(pair) for pair in chars.merges]
            try:
                # Again, right before writing: a file may have appeared there during training,
                # even a checkpoint (another run's, saving to the same name): it is kept.
                check_can_write(args.save, is_checkpoint, "microgpt checkpoint")
                now = file_identity(args.save)
                if now != save_was:
                    raise BadInput(f"{args.save} " + ("appeared" if save_was is None else "changed")
                                   + " during training (another run saving there?), so it was kept")
                save_checkpoint(args.save, params, config, chars, mode, extra)
            except BadInput as e:         # the trained model is not lost: it goes to a new file
                rescued = save_rescue_copy(params, config, chars, mode, extra)
                raise BadInput(f"{e}; the trained model was saved to {rescued} instead" + (
                    f"; the page {visible(args.report, keep='')} was not written: `--load {rescued} --report "
                    "PAGE.html` draws it" if args.report else "")) from None
            stop.finishing = False        # the model is safe: from now on a signal stops at once
            say_saved(f"saved the model to {visible(args.save, keep='')}")

    record = {}                             # what --report needs to know about the run, and --save keeps
    # A resumed or fine-tuned model's history goes on: the runs before this one, in model steps.
    earlier = None
    if config.steps > 0:
        earlier = (history_of(history.get("earlier")) if history else remembered_history(raw)) or None
        earlier = earlier if earlier and "first" in earlier else None
    # A run that only saves validates its history on fewer held-out sequences (see SAVED_VAL_SUBSET).
    subset_size = history_subset((history or earlier) if config.steps > 0 else None, args.report, mode)
    on_step = report_recorder(record, params, config, mode, chars, val_seqs, prompt, stream_start, subset_size,
                              lambda: stop.signum is not None) if args.report or args.save else None
    if config.steps > 0 and history:        # the run so far, as the run that was stopped recorded it
        record.update({key: list(history[key]) for key in ("losses", "val_points", "snapshots")})
    if earlier:
        record["earlier"] = {key: earlier[key] for key in ("first", "losses", "val_points", "snapshots",
                                                           "val_subset")}
    if args.report and config.steps == 0:
        record.update(remembered_history(raw))     # a loaded model's training, if its checkpoint keeps it
        record["trained_on"] = raw.get("run")      # and its data: path and SHA-256 (or None)
    val_loss, seconds, started = None, 0.0, time.perf_counter()
    if config.steps > 0:
        kind = "windows" if mode == "stream" else "documents"
        # batches(0) is safe to call only for "all": random windows would use up the rng
        n = len(batches(0)) if config.batch == "all" else config.batch
        if n > 1:
            stop.when = "before the next document, giving up the step it is in"
        graph = graph_bytes(config, vocab_size, config.block_size)
        if n > 100 or n * graph > 2**28:          # a step of more than a few seconds (~10 ms per MB)
            # One graph at a time (train() frees each before building the next): the memory is
            # one graph's, the time n graphs'.
            what = (f"learns from {n:,} {kind}, one graph at a time (each up to {format_bytes(graph)})"
                    if n > 1 else f"builds a graph of up to {format_bytes(graph)}")
            print(f"each step {what}: expect a wait for each progress line", flush=True)
        # From here until the model is saved, a first Ctrl-C or SIGTERM lets the current step
        # finish, or gives it up if it has more documents to go (StoppableBatch); then the model
        # is saved as soon as training ends, before anything else.
        stop.finishing = True
        predictions = []                    # per step: how many tokens its loss is a mean over
        counted = counting_predictions(batches, config, predictions, stop, rng)
        smoothed, interrupted = train_with_progress(params, config, counted, stop, on_step, adam,
                                                    history["losses"] if history else ())
        seconds = time.perf_counter() - started - record.get("snapshot_seconds", 0.0)
        if interrupted == "during":         # the step given up: as if it had never begun
            rng.setstate(counted.rng_state)
            predictions.pop()
            if not smoothed:
                print(f"\ninterrupted by {signal.Signals(stop.signum).name} during step 1 of {config.steps}, "
                      "before any step was finished: nothing to save", file=sys.stderr)
                return 128 + stop.signum
        check_not_wrecked(smoothed, vocab_size, config.lr, sum(predictions[-100:]))
        # The check can take a minute (a large --bpe vocabulary): then a stop signal cuts it short,
        # and the model is saved at once. That is safe: --load checks every model before using it,
        # so one whose scores overflow may be saved but is never used. A quick check (the default
        # model's takes milliseconds) is always finished, with the save below: signals are held.
        weights, wrecked = inference_weights(params), ("training wrecked the model: its scores are no longer "
                                                       f"finite numbers; try a smaller --lr than {config.lr}; "
                                                       "nothing was saved")
        quick = score_check_is_quick(weights, config)
        stop.when = "now: the model's score check is cut short to save it"
        if not quick and not check_finite_scores(weights, config, wrecked, lambda: stop.signum is not None):
            print("microgpt: the model's scores were not all checked (the run was stopped); --load checks "
                  "them again", file=sys.stderr)
        # One rule for saving: from the moment the run says it saves until the file is written,
        # stop signals are held (judging and writing a model take seconds), so neither a second
        # Ctrl-C after "saving to" nor a first one during a run's ordinary save can cut it;
        # a signal held meanwhile is handled once the model is saved, and stops the run at once.
        with stop_signals_held():
            if quick:
                check_finite_scores(weights, config, wrecked)
            if interrupted == "during":
                print(f"\ninterrupted by {signal.Signals(stop.signum).name} during step {len(smoothed) + 1} of "
                      f"{config.steps}, which was given up" + (f"; saving the model after step {len(smoothed)} to "
                                                               f"{args.save}" if args.save else ""), file=sys.stderr)
            elif stop.signum is not None:
                print(f"\ninterrupted by {signal.Signals(stop.signum).name} after {len(smoothed)} of "
                      f"{config.steps} steps" + (f"; saving to {args.save}" if args.save else ""), file=sys.stderr)
            save(len(smoothed))
            stop.finishing = False
        if stop.signum is not None:
            if args.report:                 # the page shows a whole run: it is drawn when the run is done
                resume = (f"`--resume {args.save} --report {args.report}` finishes the run and writes it, "
                          if len(smoothed) < config.steps else "")      # a run with all its steps is done
                print(f"microgpt: the page {args.report} was not written (the run was stopped)" + (
                      f"; {resume}`--load {args.save} --report {args.report}` draws the model as it is now"
                      if args.save else ""), file=sys.stderr)
            return 128 + stop.signum
        if args.report and args.save:       # a stop from now on (in validation, sampling) ends the run at once
            stop.unwritten = (f"microgpt: the page {args.report} was not written (the run was stopped after saving "
                              f"its model); `--load {args.save} --report {args.report}` writes it")
        if val_seqs and (args.report or not output_lost()):    # the page needs it even if nobody reads
            val_loss = record.get("val_loss") or validation_loss(val_seqs, inference_weights(params), config)
            print(f"validation loss: {val_loss:.4f} "
                  f"(mean per token over {len(val_seqs):,} held-out {kind})")
            if getattr(chars, "merges", None):
                print(f"validation loss per character: {loss_per_character(val_loss, val_seqs, chars, config):.4f}")

    weights = inference_weights(params)
    print_samples(weights, config, chars, mode, prompt, stream_start)
    if args.chain is not None:
        print_chain(markov_chain(weights, config, vocab_size), chars, args.chain)
    if args.explain is not None and not output_lost():
        print_explanation(explain_inputs, explain_targets, weights, config, chars)
    if args.report:
        record.setdefault("first", 0)
        record.setdefault("val_loss", None)
        record.setdefault("val_count", 0)
        if config.steps > 0:                # the page shows the model's whole history, in model steps
            record.update(continued(record.get("earlier"), record, steps_before), val_loss=val_loss,
                          val_count=len(val_seqs))
        record.update(config=config, mode=mode, chars=chars, weights=weights, n_params=n_params, text=text,
                      val_seqs=val_seqs, seconds=seconds, steps_before=steps_before,
                      prompt=prompt, stream_start=stream_start,
                      explain_io=(explain_inputs, explain_targets) if args.explain is not None else None)
        write_report(args, record)
        stop.unwritten = None
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


def say_saved(line):
    """Print where a model was saved on stdout, and on stderr too if stdout is gone (as in
    `--save m.json | head -1`): what was saved where must never be lost with the output."""
    print(line, flush=True)
    if output_lost():
        print(line, file=sys.stderr)


def main(argv=None):
    """Command-line entry point; returns the exit code."""
    if hasattr(sys.stdout, "reconfigure"):
        # Never crash on a character the terminal cannot show; print an escape instead.
        sys.stdout.reconfigure(errors="backslashreplace")
    global FAST
    fast_before = FAST
    out = sys.stdout = GuardedOutput(sys.stdout)
    err = sys.stderr = GuardedOutput(sys.stderr)   # an error message that cannot be shown still exits 2
    stop = StopSignals()
    restore_signals = stop.install()
    try:
        try:
            args = make_parser().parse_args(argv)
            FAST = FAST and not args.plain
            with cycle_collector_paused():             # Part II, section II.3
                code = run(args, stop)
        except BadInput as e:
            print(f"microgpt: error: {visible(str(e), keep='')}", file=sys.stderr)
            code = 2
        except MemoryError:
            print("microgpt: error: out of memory: choose a smaller data file, --n-embd, --n-layer, --block-size "
                  "or --batch", file=sys.stderr)
            code = 2
    except KeyboardInterrupt as e:        # Stopped (also while an error above was being shown)
        stop.stopping = True
        signum = e.args[0] if isinstance(e, Stopped) else signal.SIGINT
        print(f"\nmicrogpt: interrupted by {signal.Signals(signum).name}", file=sys.stderr)
        for said in (stop.unwritten, stop.redo):
            if said:
                print(said, file=sys.stderr)
        code = 128 + signum
    finally:
        stop.leaving = True
        restore_signals()
        sys.stdout, sys.stderr = out.stream, err.stream
        FAST = fast_before
    if stop.late and not stop.stopping:   # a signal as main() ended (after a stopped run's save)
        print(f"\nmicrogpt: interrupted by {signal.Signals(stop.late).name}", file=sys.stderr)
        code = 128 + stop.late
    if out.error is not None and not isinstance(out.error, BrokenPipeError):
        # A reader that went away is no error (`| head` wants only the first lines); anything
        # else that kept the output from being written is, though the job itself went on.
        print(f"microgpt: error: could not write the output: {out.error.strerror or out.error}", file=sys.stderr)
        code = code or 2
    return code


# ---------------------------------------------------------------------------------------
# The assistant: --chat
#
# `python microgpt.py --chat` runs Part V from start to end (pretraining, SFT, RL, an
# evaluation after each), prints the report card, saves each stage if --save says where,
# and then chats in the terminal. `--load chat.json --chat` only chats; `--load names.json
# --chat` starts from that pretrained model of names.
# ---------------------------------------------------------------------------------------

@dataclass
class ChatPlan:
    """The pipeline's sizes and steps. The model is the default names model's, with two
    heads of 8 numbers instead of four of 4, so that one head can carry a whole letter
    across (with four heads, SFT passed 72% and 66% of the held-out requests instead of 88%
    and 88%). The context holds a prompt's 8 tokens, the answer and <|end|>: block_size 16
    leaves room for names of 8 letters. The steps keep the whole pipeline under a minute on
    PyPy: SFT stops while its copying is still unreliable, and RL, which needs no examples,
    finishes the job (with 900 SFT steps it did not: 89% and 93% after RL)."""
    n_layer: int = 1
    n_embd: int = 16
    n_head: int = 2
    block_size: int = 16
    pretrain_steps: int = 1000
    sft_steps: int = 1000
    sft_batch: int = 2            # conversations per step
    sft_lr: float = 0.02
    sft_val: int = 200            # held-out conversations for SFT's validation loss
    rl_steps: int = 100
    rl_requests: int = 4          # requests per RL step
    rl_group: int = 8             # answers per request
    rl_lr: float = 0.01
    eval_requests: int = 120      # held-out requests per kind


CHAT_OPTIONS = ("steps", "n_layer", "n_embd", "n_head", "block_size", "batch", "lr", "num_samples", "length",
                "prompt", "chain", "explain", "resume", "gpt2", "tokenize", "stream")


def stage_paths(save):
    """Where --save chat.json puts each stage: chat-pretrained.json, chat-sft.json, chat.json."""
    root, ext = os.path.splitext(save)
    return {"pretrained": f"{root}-pretrained{ext or '.json'}", "SFT": f"{root}-sft{ext or '.json'}", "RL": save}


def check_stage_paths(args):
    """Refuse, before any training, a pipeline whose stage files (stage_paths, besides --save
    itself) would be written over its other files: --report's page (written last, it would
    then refuse to replace a checkpoint, after minutes of training), the data or the loaded
    model. (The stage files' names differ from each other and from --save's by their ends.)"""
    if not args.save:
        return
    paths = stage_paths(args.save)
    options = [("--report", args.report), ("--input", args.input or default_data_path()), ("--load", args.load)]
    for stage in ("pretrained", "SFT") if not args.load else ("SFT",):   # a loaded model is not saved again
        for flag, other in options:
            if other and same_file(paths[stage], other):
                raise BadInput(f"{flag} {other} is the same file as {paths[stage]}, where --save {args.save} "
                               f"puts the {stage} stage: choose another name")


def print_stage_progress(step, num_steps, value, what, started, interactive):
    """A stage's progress line, like print_progress's: rewritten in place in a terminal."""
    every = max(1, num_steps // (100 if interactive else 10))
    if step % every and step not in (1, num_steps):
        return
    seconds = time.perf_counter() - started
    line = (f"step {step:{len(str(num_steps))}d}/{num_steps} | {what} {value:.4f} | "
            f"{1000 * seconds / step:.0f} ms/step | {seconds / step * (num_steps - step):.0f} s left")
    print(("\r" + line + "  ") if interactive else line, end="" if interactive and step < num_steps else "\n",
          flush=True)


def run_stage(steps, num_steps, what, stop, header):
    """Print the stage's header, run its generator, printing progress; returns its values, one
    per step. After a stop signal (which, with --save, only asks to stop: see run_chat) it ends
    after the current step; if the signal came earlier (in the evaluation before), the stage
    does not begin, header and all. A stage is always followed by its evaluation, so that is
    what a first signal then waits for."""
    values, started, interactive = [], time.perf_counter(), sys.stdout.isatty()
    stop_at = os.environ.get("MICROGPT_STOP_AFTER_STEP")   # for the tests, as in train_with_progress
    if stop.signum is not None:
        return values
    print(header, flush=True)
    stop.when = "after this step"
    for step, value in enumerate(steps, start=1):
        if not math.isfinite(value):
            raise BadInput(f"training diverged: the {what} became {value} at step {step}")
        values.append(value)
        print_stage_progress(step, num_steps, sum(values[-20:]) / len(values[-20:]), what, started, interactive)
        if str(step) == stop_at:
            interrupt_myself(stop)
        if stop.signum is not None:
            break
    stop.when = "after this evaluation"
    return values


def evaluate_stage(card, stage, weights, config, chat_chars, requests, seed, temperature, **facts):
    """Evaluate a stage on the held-out requests, print its pass rates, add its row to the card."""
    rates, answers = pass_rates(weights, config, chat_chars, requests, random.Random(seed + 13), temperature)
    # Two kinds of request, not a trend: "88.3% on 'starting with X'", not "starting with 88.3%".
    print(f"{stage}: held-out pass rate: " + ", ".join(f'{rate:.1%} on "{kind} X"' for kind, rate in rates.items()),
          flush=True)
    card.append(dict(facts, stage=stage, pass_rates=rates, answers=answers[:: max(1, len(answers) // 8)]))


def pretrain_for_chat(args, plan, config, stop, text):
    """The names model, trained on text (the data file's) as the default run trains it, or
    loaded with --load."""
    if args.load:
        loaded, chars, params, mode, raw = load_checkpoint(args.load)
        if mode != "docs":
            raise BadInput(f"{args.load} is a model of continuous text; --chat needs a model of names")
        for key in MODEL_SHAPE:
            setattr(config, key, getattr(loaded, key))
        if config.block_size < REQUEST_TOKENS + 8:        # the prompt, a 5-letter name and <|end|>
            raise BadInput(f"{args.load} has block_size {config.block_size}: a conversation needs at least "
                           f"{REQUEST_TOKENS + 8}")
        return chars, params, {"steps": 0, "loss": None, "curve": [],
                               "what": f"loaded from {args.load}"}
    print("--- stage 1: pretraining on names ---")
    rng = random.Random(config.seed)
    _, chars, batches, val_seqs = prepare_data(args.input or default_data_path(), config, "docs", None, rng,
                                               text=text)
    params = init_params(config, len(chars) + 1, rng)
    started = time.process_time()
    smoothed, _ = train_with_progress(params, config, batches, stop)
    if len(smoothed) < config.steps:                      # stopped: chat_pipeline saves it as it is
        return chars, params, {"steps": len(smoothed)}
    val_loss = validation_loss(val_seqs, inference_weights(params), config) if val_seqs else None
    return chars, params, {"steps": config.steps, "loss": val_loss, "curve": smoothed,
                           "what": "validation loss on held-out names", "cpu": time.process_time() - started}


def chat_pipeline(args, plan, stop, sft_model=None):
    """Part V, stage by stage. Returns (config, chat vocabulary, params, the card), or None
    if a stop signal ended it (the stage it was in is then saved as it is: save_stopped_stage).
    sft_model, if given, is a saved SFT stage, (config, chat vocabulary, params): then the
    pipeline resumes from it and runs only RL, exactly as the whole pipeline would have."""
    started = time.process_time()
    # Read once, before any stage begins: a missing file is then an error before the first
    # header, and a pipe (--input /dev/stdin) gives its text to both pretraining and the task.
    text = read_data_file(args.input or default_data_path())
    if sft_model:
        config, chat_chars, params = sft_model
        config.seed, config.temperature, chars = args.seed, args.temperature, chat_chars[:chat_chars.index(USER)]
    else:
        config = Config(n_layer=plan.n_layer, n_embd=plan.n_embd, n_head=plan.n_head, block_size=plan.block_size,
                        steps=plan.pretrain_steps, seed=args.seed, temperature=args.temperature)
        chars, params, facts = pretrain_for_chat(args, plan, config, stop, text)
    paths = stage_paths(args.save) if args.save and not sft_model else {}
    card, seed = [], config.seed

    def redo_from(before):        # the options that run a stopped stage again, from the file before it
        return ((["--load", before] if before else []) + ["--chat", "--save", args.save]
                + (["--input", args.input] if args.input else [])
                + (["--seed", str(args.seed)] if args.seed != Config().seed else [])
                + (["--temperature", str(args.temperature)] if args.temperature != Config().temperature else [])
                + (["--report", args.report] if args.report else []))
    if not args.load and facts["steps"] < plan.pretrain_steps:
        return save_stopped_stage(stop, paths["pretrained"], facts["steps"], plan.pretrain_steps, "pretraining",
                                  params, config, chars, "docs", {}, redo_from(None), args.report)
    if "pretrained" in paths and not args.load:
        save_chat_stage(paths["pretrained"], params, config, chars, "docs", {})
    # From here a first stop signal waits for the evaluation it comes in (run_stage says which
    # wait it is), and a second, which stops at once, leaves the next stage to redo from the
    # file before it: main() then says how, as save_stopped_stage does.
    stop.when = "after this evaluation"
    if args.save:
        stop.redo = (f"to redo the reinforcement learning from its start: {command_line(redo_from(args.load))}"
                     if sft_model else "to redo the fine-tuning from its start: "
                     + command_line(redo_from(args.load or paths["pretrained"])))
    # The task, and the pretrained model prompted in the chat format (it writes names, but
    # knows nothing of the requests yet).
    rng = random.Random(seed + 10)
    names = [n for n in split_documents(text.replace("\r", "\n")) if n.isalpha() and set(n) <= set(chars)]
    train_requests, held_out = split_requests(names, rng)
    requests = evaluation_requests(held_out, plan.eval_requests, rng)
    print(f"task: {len(train_requests):,} requests to fine-tune on, {len(held_out):,} held out; evaluating on "
          f"{len(requests)} held-out requests at temperature {config.temperature}", flush=True)
    if sft_model:
        evaluate_stage(card, "SFT", inference_weights(params), config, chat_chars, requests, seed,
                       config.temperature, steps=0, loss=None, what=f"loaded from {args.load}")
    else:
        chat_chars = chat_vocab(chars)
        params = add_chat_tokens(params, chars, chat_chars, config, rng)
        evaluate_stage(card, "pretrained", inference_weights(params), config, chat_chars, requests, seed,
                       config.temperature, **facts)
        done = sft_stage(card, plan, stop, config, chat_chars, params, names, train_requests, held_out, requests)
        if stop.signum is not None and done < plan.sft_steps:
            redo = redo_from(args.load or paths["pretrained"])
            return save_stopped_stage(stop, paths["SFT"], done, plan.sft_steps, "fine-tuning", params, config,
                                      chat_chars, "chat", {"stage": "SFT"}, redo, args.report)
        if "SFT" in paths:
            save_chat_stage(paths["SFT"], params, config, chat_chars, "chat", {"stage": "SFT"})
            stop.redo = f"to redo the reinforcement learning from its start: {command_line(redo_from(paths['SFT']))}"
    config.lr, before = plan.rl_lr, time.process_time()
    rl_rng = random.Random(seed + 12)
    pool = sorted(train_requests)
    curve = run_stage(rl_steps(params, config, chat_chars, lambda step: rl_rng.sample(pool, plan.rl_requests),
                               plan.rl_steps, plan.rl_group, rl_rng), plan.rl_steps, "reward", stop,
                      f"--- stage 3: reinforcement learning, {plan.rl_steps} steps of {plan.rl_requests} requests "
                      f"x {plan.rl_group} answers ---")
    if stop.signum is not None and len(curve) < plan.rl_steps:
        return save_stopped_stage(stop, args.save, len(curve), plan.rl_steps, "reinforcement learning", params,
                                  config, chat_chars, "chat", {"stage": "RL"},
                                  redo_from(args.load if sft_model else paths["SFT"]), args.report)
    evaluate_stage(card, "RL", inference_weights(params), config, chat_chars, requests, seed, config.temperature,
                   steps=plan.rl_steps, loss=sum(curve[-10:]) / len(curve[-10:]), curve=curve,
                   what="mean reward of the last 10 steps", cpu=time.process_time() - before)
    print(f"the pipeline took {time.process_time() - started:.0f} s of CPU")
    return config, chat_chars, params, card


def sft_stage(card, plan, stop, config, chat_chars, params, names, train_requests, held_out, requests):
    """Stage 2: fine-tune params in place, validate, evaluate, add the SFT row to the card.
    Returns the number of steps it took (fewer if a stop signal ended it: then it stops there)."""
    seed = config.seed
    config.lr, before = plan.sft_lr, time.process_time()
    sft_rng, answers = random.Random(seed + 11), sft_answers(names, train_requests, config)
    if not all(answers.values()):
        raise BadInput("the names give no fine-tuning example of some kind of request: too few names, or none "
                       f"of {REQUEST_TOKENS - 1} letters")
    examples = lambda step, b: sft_example(answers, chat_chars, sft_rng)
    curve = run_stage(sft_steps(params, config, examples, plan.sft_steps, plan.sft_batch), plan.sft_steps,
                      "answer loss", stop, f"--- stage 2: supervised fine-tuning, {plan.sft_steps} steps of "
                      f"{plan.sft_batch} conversations ---")
    if len(curve) < plan.sft_steps:
        return len(curve)
    val_rng = random.Random(seed + 14)
    held_out_answers = sft_answers(names, held_out, config)
    val = [sft_example(held_out_answers, chat_chars, val_rng) for _ in range(plan.sft_val)] if all(
        held_out_answers.values()) else []
    weights, val_loss = inference_weights(params), None
    if val:
        val_loss = sum(float(l) for t, m in val for l in answer_losses(t, m, weights, config)) / sum(
            sum(m) for _, m in val)
        print(f"validation: answer loss {val_loss:.4f} on {len(val)} held-out conversations")
    evaluate_stage(card, "SFT", weights, config, chat_chars, requests, seed, config.temperature,
                   steps=plan.sft_steps, loss=val_loss, curve=curve, what="answer loss on held-out requests",
                   cpu=time.process_time() - before)
    return len(curve)


def save_chat_stage(path, params, config, chars, mode, extra, page=None):
    """Save one stage's model; if that fails, to a new file of its own. Stop signals wait
    until it is written, as a names run's save does (see run). page: the --report page the
    run was to write after this save, which a failed save leaves unwritten (the error says
    how to draw it from the rescued model)."""
    with stop_signals_held():
        try:
            check_can_write(path, is_checkpoint, "microgpt checkpoint")
            save_checkpoint(path, params, config, chars, mode, extra)
        except BadInput as e:
            rescued = visible(save_rescue_copy(params, config, chars, mode, extra), keep="")
            raise BadInput(f"{e}; the model was saved to {rescued} instead" + (
                f"; the page {visible(page, keep='')} was not written: `--load {rescued} --chat --report "
                "PAGE.html` draws it" if page else "")) from None
        say_saved(f"saved the {extra.get('stage', 'pretrained')} model to {visible(path, keep='')}")


def save_stopped_stage(stop, path, done, total, what, params, config, chars, mode, extra, redo, page=None):
    """After a stop signal (--chat --save): save the model of the stage the pipeline was in, as
    it is, to that stage's file, saying so; returns None, chat_pipeline's "stopped". The file
    records how far its stage got ("stopped": steps done, of how many); --load goes on from it
    to the next stage, as from a finished one. A stage cannot be resumed in its middle, so the
    run also says how to redo it from its start (redo: the command line's options, a list),
    and that its --report page (page) was not written: the redone run writes it. A stop
    before the stage's first step (done 0) saves nothing: the stage before it is saved."""
    stop.redo = f"to redo the {what} from its start: {command_line(redo)}"     # if a signal cuts this short
    with stop_signals_held():
        if done == 0:       # stopped between two stages: the stage before is saved, this one has nothing new
            print(f"\ninterrupted by {signal.Signals(stop.signum).name} before the first step of {what}: "
                  "nothing new to save", file=sys.stderr)
        else:
            print(f"\ninterrupted by {signal.Signals(stop.signum).name} after {done} of {total} steps of {what}; "
                  f"saving the model so far to {visible(path, keep='')} (its {what} is not finished)",
                  file=sys.stderr)
            save_chat_stage(path, params, config, chars, mode, dict(extra, stopped={"steps": done, "of": total}))
        stop.finishing = False
    if page:
        print(f"microgpt: the page {visible(page, keep='')} was not written (the run was stopped); the command "
              "below writes it when its pipeline is done", file=sys.stderr)
    print(stop.redo, file=sys.stderr)
    stop.redo = None
    return None


def command_line(options):
    """A command that runs this program with these options, to copy into a shell: the
    interpreter by the name this run was started with (python3 where there is no `python`),
    then microgpt.py (its full path, unless it is in the current directory)."""
    script = os.path.abspath(__file__)
    shown = "microgpt.py" if os.path.dirname(script) == os.getcwd() else script
    return " ".join(shell_word(word) for word in [os.path.basename(sys.executable) or "python", shown] + options)


def shell_word(word):
    """A word quoted for a POSIX shell. One with characters a terminal would act on (ESC,
    U+202E) is written in bash's $'...' quoting, where \\x1b is ESC: safe to print, and it
    still pastes back as the same word (bash, zsh, ksh)."""
    if word.isprintable():
        return shlex.quote(word)
    return "$'" + "".join(ch if ch.isprintable() and ch not in "\\'" else
                          "\\" + ch if ch in "\\'" else
                          f"\\x{ord(ch):02x}" if ord(ch) < 0x80 else
                          f"\\u{ord(ch):04x}" if ord(ch) <= 0xFFFF else f"\\U{ord(ch):08x}" for ch in word) + "'"


# Under RL's answers, on the card and its page: "right" is the reward's word, not a judgment
# of the name (Part V.4).
REWARD_HACKING = ("RL's reward checks X, letters and the end, not whether the answer sounds like a name, "
                  "so answers like these count as right: reward hacking, Part V.4")


def print_card(card, plan):
    """The report card: a row per stage, its loss and its pass rate per kind."""
    kinds = list(TASKS)
    print(f"\nreport card: pass rate on held-out requests ({plan.eval_requests} of each kind)")
    print(f"{'stage':<11} {'steps':>5}  {'loss':>8}  " + "  ".join(f"{k:>13}" for k in kinds) + "  loss is")
    for row in card:
        loss = f"{row['loss']:.4f}" if row.get("loss") is not None else "-"
        print(f"{row['stage']:<11} {row.get('steps', 0):>5}  {loss:>8}  "
              + "  ".join(f"{row['pass_rates'].get(k, 0):>13.1%}" for k in kinds) + f"  {row['what']}")
    print("\nexample conversations (after RL, held-out requests):")
    for request, answer, correct in card[-1]["answers"]:
        print(f"  {request:<26} -> {answer or '(nothing)':<14} {'right' if correct else 'wrong'}")
    if card[-1]["stage"] == "RL":
        print(f"  ({REWARD_HACKING})")


def write_chat_report(path, card, plan, config, chat_chars, params):
    """--report with --chat: the report card as a page (chat_report_page), written atomically."""
    try:
        page = chat_report_page(card, plan if isinstance(plan, ChatPlan) else ChatPlan(**plan), config,
                                chat_chars, inference_weights(params))
    except (KeyError, TypeError, ValueError, AttributeError, IndexError):     # a card loaded from a file
        raise BadInput(f"the report card kept in the checkpoint is damaged; cannot write {path}") from None
    write_page(path, page)


CHAT_LINE_LIMIT = 100000     # characters of a request read at most: a pipe without newlines must not fill memory


def as_the_model_reads(request, chat_chars):
    """The request lower-cased if the model knows no capital letter (names.txt is lower
    case; a phone capitalises the first letter), so "A name starting with M" is answered
    as "a name starting with m". A model trained on mixed case keeps the case it was given."""
    if any(ch.isupper() for token in chat_chars if token not in SPECIAL for ch in token):
        return request
    return request.lower()


def line_editing():
    """Arrow keys and history for input() at a terminal, where Python has readline (not on
    Windows). Without it, an arrow key arrives as the characters of its escape sequence."""
    try:
        import readline  # noqa: F401  (importing it is all it takes)
    except ImportError:
        pass


NO_ANSWER = "(no answer: the model ended its turn at once)"
ENDS_WITH_SPACE = "(the answer ends with a space)"
SPECIAL_IN_ANSWER = (f"({PAD} is a special token, not text: the filler of the request's empty slots. "
                     "The model may write any token it knows, more often at a high temperature; an answer "
                     "ends at <|end|>, <|user|> or <|assistant|>, Part V.2)")


def terminal_chat(weights, config, chat_chars, seed, temperature):
    """Answer one request per line of standard input (a terminal or a pipe), streamed."""
    if sys.stdin is None:                         # started with standard input closed (<&-): nothing to read
        return
    if hasattr(sys.stdin, "reconfigure"):
        sys.stdin.reconfigure(errors="replace")   # undecodable bytes become U+FFFD: an unknown character
    interactive = sys.stdin.isatty()
    if interactive:
        line_editing()
        print("\nchat: ask for 'a name starting with X' or 'a name ending with X', X being 1 to 3 letters "
              "(Ctrl-D to quit)")
    rng = random.Random(seed + 1)
    explained = False
    while not output_lost():
        if interactive:                               # a line a person types: input() edits it
            try:
                line = input("> ")
            except EOFError:
                break
            request, too_long = line.strip(), len(line) >= CHAT_LINE_LIMIT
        else:
            line = sys.stdin.readline(CHAT_LINE_LIMIT)
            if not line:
                break
            request, too_long = line.strip(), len(line) == CHAT_LINE_LIMIT and not line.endswith("\n")
            while line and not line.endswith("\n"):   # the rest of a line too long to answer: skipped
                line = sys.stdin.readline(CHAT_LINE_LIMIT)
        if not request:
            continue
        if not interactive:                           # the echo, like the answer, cannot move the cursor
            print(f"> {visible(request[:200])}" + "..." * (len(request) > 200))
        if too_long:
            print(f"(cannot answer: a request of more than {CHAT_LINE_LIMIT:,} characters)", flush=True)
            continue
        try:
            pieces = []
            for piece, _, _ in chat_reply(weights, config, chat_chars, as_the_model_reads(request, chat_chars),
                                          rng, temperature):
                print(piece, end="", flush=True)
                pieces.append(piece)
            # an answer can end in a space that cannot be seen (the phrase token "a name ending with ")
            print(ENDS_WITH_SPACE if "".join(pieces)[-1:].isspace() else "" if pieces else NO_ANSWER)
            if not explained and PAD in pieces:   # said once: at temperature 10, nearly every answer has one
                explained = True
                print(SPECIAL_IN_ANSWER, flush=True)
        except BadInput as e:
            print(f"(cannot answer: {e})", flush=True)
    if interactive:
        print()


def run_chat(args, stop):
    """--chat: run the pipeline (or load a chat model), then chat."""
    for key in CHAT_OPTIONS:
        if getattr(args, key, None) not in (None, False) or getattr(args, "bpe", 0):
            raise BadInput(f"--{key.replace('_', '-') if getattr(args, key, None) else 'bpe'} does not apply to --chat")
    defaults = Config()
    args.seed = defaults.seed if args.seed is None else args.seed
    args.temperature = defaults.temperature if args.temperature is None else args.temperature
    for flag in ("input", "load", "save", "report"):
        if getattr(args, flag) == "":
            raise BadInput(f"--{flag} needs a file name, not an empty string")
    if args.save and same_file(args.save, args.input or default_data_path()):
        raise BadInput(f"--save {args.save} is the data file: saving would replace it")
    for flag, other in (("--save", args.save), ("--input", args.input), ("--load", args.load)):
        if args.report and other and same_file(args.report, other):
            raise BadInput(f"--report {args.report} is the same file as {flag} {other}")
    if not (math.isfinite(args.temperature) and args.temperature >= 0):
        raise BadInput(f"--temperature must be 0 (always the likeliest token) or more, not {args.temperature}")
    plan = ChatPlan()
    loaded = load_checkpoint(args.load) if args.load else None
    # --save never names the model the run starts from (check_stage_paths does its stage files)
    if loaded and args.save and same_file(args.save, args.load):
        raise BadInput(f"--save {args.save} is the model --load starts from: it would be replaced; choose "
                       "another name")
    if args.report:       # what a stop says if it comes before the page is written (main() prints it)
        stop.unwritten = f"microgpt: the page {visible(args.report, keep='')} was not written (the run was stopped)"

    def write_card(card, plan):
        write_chat_report(args.report, card, plan, config, chat_chars, params)
        stop.unwritten = None
    # With --save, from the start of training until the assistant is saved, a first stop
    # signal only asks to stop after the current step: the stage it came in is then saved as
    # it is, and the run exits with 130 (143, 129), as a names run does (see StopSignals).
    if loaded and loaded[3] == "chat" and loaded[4].get("stage") == "SFT" and args.save:
        # Resume: RL on the saved SFT stage, as the whole pipeline would have run it.
        check_can_write(args.save, is_checkpoint, "microgpt checkpoint")
        if args.report:
            check_can_write(args.report, is_microgpt_report, "page written by microgpt --report")
        stop.finishing = True
        result = chat_pipeline(args, plan, stop, loaded[:3])
        if result is None:
            return 128 + stop.signum
        config, chat_chars, params, card = result
        print_card(card, plan)
        save_chat_stage(args.save, params, config, chat_chars, "chat",
                        {"stage": "RL", "card": card, "plan": vars(plan)}, args.report)
        stop.finishing, stop.redo = False, None
        if stop.signum is not None:
            return 128 + stop.signum
        if args.report:
            write_card(card, plan)
    elif loaded and loaded[3] == "chat":
        if args.save or args.input:
            raise BadInput(f"{args.load} is a trained chat model: --save and --input apply only to training one "
                           "(or to resuming an SFT stage)")
        if args.report:       # refused before the model is used, as for a names run
            check_can_write(args.report, is_microgpt_report, "page written by microgpt --report")
        config, chat_chars, params, _, raw = loaded
        config.seed, config.temperature = args.seed, args.temperature
        stopped = raw.get("stopped") if isinstance(raw.get("stopped"), dict) else {}   # see save_stopped_stage
        done, total = stopped.get("steps"), stopped.get("of")
        print(f"model: the {raw.get('stage', 'chat')} stage's assistant from {args.load}"
              + (f" (stopped after {done} of its {total} steps)" if type(done) is int and type(total) is int else ""))
        if args.report:
            if not isinstance(raw.get("card"), list) or not isinstance(raw.get("plan"), dict):
                raise BadInput(f"{args.load} has no report card: only the checkpoint of a finished pipeline's "
                               "last stage keeps one")
            write_card(raw["card"], raw["plan"])
    else:
        check_stage_paths(args)
        for path in stage_paths(args.save).values() if args.save else ():
            check_can_write(path, is_checkpoint, "microgpt checkpoint")
        if args.report:
            check_can_write(args.report, is_microgpt_report, "page written by microgpt --report")
        stop.finishing = bool(args.save)
        result = chat_pipeline(args, plan, stop)
        if result is None:
            return 128 + stop.signum
        config, chat_chars, params, card = result
        print_card(card, plan)
        if args.save:
            save_chat_stage(args.save, params, config, chat_chars, "chat",
                            {"stage": "RL", "card": card, "plan": vars(plan)}, args.report)
            stop.finishing, stop.redo = False, None
            if stop.signum is not None:
                return 128 + stop.signum
        else:
            print("(not saved: add --save chat.json to keep the assistant, and its stages beside it)")
        if args.report:
            write_card(card, plan)
    terminal_chat(inference_weights(params), config, chat_chars, config.seed, config.temperature)
    return 0


# ---------------------------------------------------------------------------------------
# GPT-2: its files, its download, its command line
#
# A GPT-2 is a folder of four files, as the Hugging Face hub serves them: config.json (the
# shape), vocab.json and merges.txt (the tokenizer, Part IV) and model.safetensors (the
# weights). safetensors is a simple format: 8 bytes giving the length of a JSON header,
# the header (each tensor's dtype, shape and byte offsets), then the raw numbers. Reading it
# runs no code, unlike a pytorch_model.bin, which is a pickle: loading one can run
# anything its author wrote, so we refuse it. Everything in the header is checked before a
# byte of data is trusted.
# ---------------------------------------------------------------------------------------

import codecs
import hashlib
import http.client
import shutil
import struct
import urllib.error
import urllib.request

SAFETENSORS_DTYPES = {"F32": 4, "F16": 2, "BF16": 2, "F64": 8, "I64": 8, "I32": 4, "I16": 2, "I8": 1, "U8": 1,
                      "BOOL": 1}      # bytes per number; we compute with the first three
GPT2_ACTIVATIONS = ("gelu_new", "gelu_pytorch_tanh")    # both names of GPT-2's tanh GELU


def read_gpt2_config(folder):
    """GPT2Config from folder/config.json, or BadInput saying what is wrong with it."""
    path = os.path.join(folder, "config.json")
    try:
        raw = json.loads(read_data_file(path, "config.json"))
    except (ValueError, RecursionError):
        raise BadInput(f"{path} is not valid JSON") from None
    if not isinstance(raw, dict):
        raise BadInput(f"{path} is not a JSON object")
    if raw.get("model_type") != "gpt2":
        raise BadInput(f"{path}: model_type {raw.get('model_type')!r} is not supported; microgpt runs GPT-2 ('gpt2')")
    activation = raw.get("activation_function", "gelu_new")
    if activation not in GPT2_ACTIVATIONS:
        raise BadInput(f"{path}: activation_function {activation!r} is not supported (GPT-2's is 'gelu_new')")
    if raw.get("scale_attn_by_inverse_layer_idx") or raw.get("scale_attn_weights") is False:
        raise BadInput(f"{path}: attention scaled otherwise than by 1 / sqrt(head size) is not supported")
    n_embd = raw.get("n_embd", 768)
    values = {"n_layer": raw.get("n_layer", 12), "n_embd": n_embd, "n_head": raw.get("n_head", 12),
              "n_positions": raw.get("n_positions", 1024), "vocab_size": raw.get("vocab_size", 50257),
              "n_inner": raw.get("n_inner") or (4 * n_embd if type(n_embd) is int else None)}
    for key, value in values.items():
        if type(value) is not int or not 1 <= value <= LARGEST_COUNT:
            raise BadInput(f"{path}: {key} must be a positive whole number, not {value!r}")
    eps = raw.get("layer_norm_epsilon", 1e-5)
    if type(eps) not in (int, float) or not 0 < eps < 1:
        raise BadInput(f"{path}: layer_norm_epsilon must be a small positive number, not {eps!r}")
    if n_embd % values["n_head"]:
        raise BadInput(f"{path}: n_embd {n_embd} is not divisible by n_head {values['n_head']}")
    return GPT2Config(eps=float(eps), **values)


def gpt2_shapes(config):
    """Name -> shape of every tensor a GPT-2 of this config needs, as its file stores them.
    GPT-2's linear layers are "Conv1D"s, which store a matrix as [n_in][n_out]: the
    transpose of our rows."""
    e, inner = config.n_embd, config.n_inner
    shapes = {"wte.weight": [config.vocab_size, e], "wpe.weight": [config.n_positions, e],
              "ln_f.weight": [e], "ln_f.bias": [e]}
    for i in range(config.n_layer):
        for name, shape in (("ln_1.weight", [e]), ("ln_1.bias", [e]), ("attn.c_attn.weight", [e, 3 * e]),
                            ("attn.c_attn.bias", [3 * e]), ("attn.c_proj.weight", [e, e]), ("attn.c_proj.bias", [e]),
                            ("ln_2.weight", [e]), ("ln_2.bias", [e]), ("mlp.c_fc.weight", [e, inner]),
                            ("mlp.c_fc.bias", [inner]), ("mlp.c_proj.weight", [inner, e]), ("mlp.c_proj.bias", [e])):
            shapes[f"h.{i}.{name}"] = shape
    return shapes


def gpt2_memory(config):
    """(parameters, bytes) of a loaded GPT-2: 4 bytes per parameter, about 100 per row
    (each row is one array object), 100 MB for the reading and the interpreter."""
    # Counted, not summed over gpt2_shapes(): a config.json may claim 10**12 layers.
    e, inner = config.n_embd, config.n_inner
    per_layer = 4 * e * e + 2 * e * inner + 9 * e + inner      # ln_1, c_attn, c_proj, ln_2, c_fc, c_proj
    n_params = (config.vocab_size + config.n_positions + 2) * e + config.n_layer * per_layer
    rows = config.vocab_size + config.n_positions + config.n_layer * (4 * config.n_embd + config.n_inner)
    return n_params, 4 * n_params + 100 * rows + 100 * 2**20


def read_safetensors_header(path):
    """name -> (dtype, shape, start, end): each tensor's bytes as absolute offsets into the
    file, every one checked: inside the file, no two overlapping, and as long as its shape
    and dtype say. BadInput for anything else."""
    try:
        size = os.path.getsize(path)
        with open(path, "rb") as f:
            head = f.read(8)
            n = struct.unpack("<Q", head)[0] if len(head) == 8 else None
            if n is None or n > size - 8:
                raise BadInput(f"{path} is not a safetensors file: its header would be longer than the file")
            if n > MAX_FILE_BYTES:
                raise BadInput(f"{path}: a header of {n:,} bytes is more than a safetensors file has")
            raw = f.read(n)
    except OSError as e:
        raise BadInput(f"cannot read {path}: {e.strerror or e}") from None
    try:
        header = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise BadInput(f"{path} is not a safetensors file: its header is not JSON") from None
    if not isinstance(header, dict):
        raise BadInput(f"{path} is not a safetensors file: its header is not a JSON object")
    start, data_bytes, tensors = 8 + n, size - 8 - n, {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        info = info if isinstance(info, dict) else {}
        dtype, shape, offsets = info.get("dtype"), info.get("shape"), info.get("data_offsets")
        if dtype not in SAFETENSORS_DTYPES:
            raise BadInput(f"{path}: tensor {name} has an unknown dtype {dtype!r}")
        if not (isinstance(shape, list) and all(type(d) is int and 0 <= d <= LARGEST_COUNT for d in shape)):
            raise BadInput(f"{path}: tensor {name} has no valid shape")
        if not (isinstance(offsets, list) and len(offsets) == 2 and all(type(o) is int for o in offsets)
                and 0 <= offsets[0] <= offsets[1] <= data_bytes):
            raise BadInput(f"{path}: tensor {name}'s offsets {offsets} are outside the file's {data_bytes:,} "
                           "bytes of data (is the file truncated?)")
        if math.prod(shape) * SAFETENSORS_DTYPES[dtype] != offsets[1] - offsets[0]:
            raise BadInput(f"{path}: tensor {name} has {offsets[1] - offsets[0]:,} bytes, but its shape "
                           f"{shape} of {dtype} needs {math.prod(shape) * SAFETENSORS_DTYPES[dtype]:,}")
        tensors[name] = (dtype, shape, start + offsets[0], start + offsets[1])
    spans = sorted((begin, end, name) for name, (_, _, begin, end) in tensors.items() if end > begin)
    for (_, end, a), (begin, _, b) in zip(spans, spans[1:]):
        if begin < end:
            raise BadInput(f"{path}: tensors {a} and {b} overlap in the file")
    return tensors


def read_floats(f, dtype, count):
    """The next `count` numbers of a file as float32: F32 as they are, F16 through struct
    (its 'e' format), BF16 (the top two bytes of a float32) by putting two zero bytes under
    each."""
    data = f.read(count * SAFETENSORS_DTYPES[dtype])
    out = array("f")
    if dtype == "F16":
        out.fromlist(list(struct.unpack(f"<{count}e", data)))
        return out
    if dtype == "BF16":
        wide = bytearray(4 * count)
        wide[2::4], wide[3::4] = data[0::2], data[1::2]
        data = bytes(wide)
    out.frombytes(data)
    if sys.byteorder == "big":            # the file is little-endian
        out.byteswap()
    return out


def gpt2_tensors(path, config):
    """read_safetensors_header(), with each tensor a GPT-2 of this config needs checked:
    there, of the right shape, and of a float dtype. Names lose a "transformer." prefix."""
    tensors = read_safetensors_header(path)
    tensors.update({name[len("transformer."):]: t for name, t in tensors.items() if name.startswith("transformer.")})
    for name, shape in gpt2_shapes(config).items():
        if name not in tensors:
            raise BadInput(f"{path} has no tensor {name}, which GPT-2 with this config.json needs")
        if tensors[name][1] != shape:
            raise BadInput(f"{path}: tensor {name} has shape {tensors[name][1]}; config.json says {shape}")
        if tensors[name][0] not in ("F32", "F16", "BF16"):
            raise BadInput(f"{path}: tensor {name} is {tensors[name][0]}; microgpt reads F32, F16 and BF16 weights")
    return tensors


def load_gpt2(path, config):
    """The weights of model.safetensors as gpt2() wants them: name -> [rows] of array('f')
    (a matrix) or one array('f') (a vector). Both layouts in use are read: the hub's
    (bare names such as h.0.attn.c_attn.weight) and save_pretrained's (a "transformer."
    prefix; its lm_head is wte again, tied, so we ignore it; the hub's h.N.attn.bias are
    masks, not parameters: ignored too)."""
    n_params, need = gpt2_memory(config)
    tensors = gpt2_tensors(path, config)
    if os.path.getsize(path) > 2**26:       # more than a second or so: say what is happening
        print(f"loading {path}: {n_params:,} parameters (about {format_bytes(need)} in memory)", file=sys.stderr, flush=True)
    w = {}
    with open(path, "rb") as f:
        for name, shape in gpt2_shapes(config).items():
            dtype, _, begin, _ = tensors[name]
            f.seek(begin)
            # A million numbers at a time, so that reading needs little more memory than the weights.
            cols, embedding = shape[-1], name in ("wte.weight", "wpe.weight")
            per_read = cols * max(1, 2**20 // cols) if embedding else math.prod(shape)
            w[name] = []
            for done in range(0, math.prod(shape), per_read):
                flat = read_floats(f, dtype, min(per_read, math.prod(shape) - done))
                # A NaN or an infinity anywhere makes the sum one too (float32 values cannot
                # overflow a sum of float64s), so one sum checks them all.
                if not math.isfinite(sum(flat)):
                    raise BadInput(f"{path}: tensor {name} holds NaN or infinite numbers")
                if len(shape) == 1:
                    w[name] = flat
                elif embedding:                                  # already one row per token or position
                    w[name].extend(flat[r:r + cols] for r in range(0, len(flat), cols))
                else:                                            # Conv1D: row j of ours is column j of theirs
                    w[name] = [flat[j::cols] for j in range(cols)]
    return w


# Downloading. Only when a model is asked for by name; a folder never touches the network.

HUB_MODELS = {"gpt2": ("openai-community/gpt2", "548 MB"),     # the repository, and about how much to fetch
              "gpt2-medium": ("openai-community/gpt2-medium", "1.5 GB"),
              "gpt2-large": ("openai-community/gpt2-large", "3.3 GB"),
              "gpt2-xl": ("openai-community/gpt2-xl", "6.4 GB"), "distilgpt2": ("distilbert/distilgpt2", "354 MB")}
GPT2_FILES = ("config.json", "vocab.json", "merges.txt", "model.safetensors")


def user_cache_dir():
    """Where this platform keeps programs' caches: ~/.cache (or $XDG_CACHE_HOME) on Linux,
    ~/Library/Caches on macOS, %LOCALAPPDATA% on Windows; ours is microgpt inside it."""
    if sys.platform == "win32":
        base = os.environ.get("LOCALAPPDATA") or os.path.join(os.path.expanduser("~"), "AppData", "Local")
    elif sys.platform == "darwin":
        base = os.path.join(os.path.expanduser("~"), "Library", "Caches")
    else:
        base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "microgpt")


class KeepLinkedHeaders(urllib.request.HTTPRedirectHandler):
    """Follows redirects as usual, keeping two headers of each redirect: the hub sends a
    large file from a storage server, and states its size and sha256 (X-Linked-Size,
    X-Linked-Etag) only on the redirect that points there."""
    def __init__(self):
        self.linked = {}

    def redirect_request(self, req, fp, code, msg, headers, newurl):
        self.linked.update({k: headers[k] for k in ("X-Linked-Size", "X-Linked-Etag") if headers.get(k)})
        return super().redirect_request(req, fp, code, msg, headers, newurl)


def print_download_progress(name, done, total, started):
    """One line on stderr, rewritten in place: how much, how fast, how long still."""
    rate = done / max(time.perf_counter() - started, 1e-9)
    left = f", {(total - done) / rate:.0f} s left" if total and rate else ""
    shown = f"{done / total:6.1%} of {format_bytes(total)}" if total else format_bytes(done)
    print(f"\r  {name}: {shown}, {format_bytes(rate)}/s{left}   ", end="", file=sys.stderr, flush=True)


def download(url, dest):
    """Fetch url to dest. The bytes go to dest + ".part", which a later call resumes (an
    HTTP Range request for the rest); dest appears, by an atomic rename, only once the file
    is complete and its size and (where the server states it) sha256 are right. A damaged
    file is deleted, not kept."""
    part, name = dest + ".part", os.path.basename(dest)
    have = os.path.getsize(part) if os.path.exists(part) else 0
    redirects = KeepLinkedHeaders()
    request = urllib.request.Request(url, headers={"User-Agent": "microgpt", "Accept-Encoding": "identity"})
    if have:
        request.add_header("Range", f"bytes={have}-")
    try:
        response = urllib.request.build_opener(redirects).open(request, timeout=60)
    except urllib.error.HTTPError as e:
        if e.code == 416 and have:          # nothing after what we have: the part is odd, start again
            os.remove(part)
            return download(url, dest)
        raise BadInput(f"cannot download {url}: HTTP {e.code} {e.reason}") from None
    except (urllib.error.URLError, OSError) as e:
        raise BadInput(f"cannot download {url}: {getattr(e, 'reason', None) or e}") from None
    with response:
        linked = dict(redirects.linked, **{k: response.headers[k] for k in ("X-Linked-Size", "X-Linked-Etag")
                                           if response.headers.get(k)})
        if response.status != 206:          # the server sends the whole file: start again
            have = 0
        length = response.headers.get("Content-Length")
        total = int(linked.get("X-Linked-Size") or (int(length) + have if length else 0))
        sha256 = linked.get("X-Linked-Etag", "").strip('"').lower()
        sha256 = sha256 if len(sha256) == 64 else None          # a small file's ETag is no sha256
        digest = hashlib.sha256()
        if have:
            print(f"  {name}: resuming after {format_bytes(have)}", file=sys.stderr)
            with open(part, "rb") as f:
                for chunk in iter(lambda: f.read(2**20), b""):
                    digest.update(chunk)
        if total > have and shutil.disk_usage(os.path.dirname(dest)).free < total - have:
            raise BadInput(f"not enough disk space for {name} ({format_bytes(total)}) in {os.path.dirname(dest)}")
        done, started, said = have, time.perf_counter(), 0.0
        every = 0.5 if sys.stderr.isatty() else 10      # seconds between progress lines; fewer in a log
        try:
            with open(part, "ab" if have else "wb") as f:
                for chunk in iter(lambda: response.read(2**20), b""):
                    f.write(chunk)
                    digest.update(chunk)
                    done += len(chunk)
                    if time.perf_counter() - said > every:
                        print_download_progress(name, done, total, started)
                        said = time.perf_counter()
        except (OSError, http.client.HTTPException) as e:
            print(file=sys.stderr)
            raise BadInput(f"the download of {name} stopped after {format_bytes(done)} ({e.__class__.__name__}); "
                           "run the same command again to resume it") from None
    print_download_progress(name, done, total, started)
    print(file=sys.stderr)
    if total and done < total:          # the connection ended early, without an error
        raise BadInput(f"the download of {name} stopped after {format_bytes(done)} of {format_bytes(total)}; "
                       "run the same command again to resume it")
    if (total and done != total) or (sha256 and digest.hexdigest() != sha256):
        os.remove(part)
        what = f"{done:,} bytes instead of {total:,}" if total and done != total else "its sha256 is wrong"
        raise BadInput(f"the download of {name} is damaged ({what}); it was deleted: run the command again")
    os.replace(part, dest)


def gpt2_folder(name_or_folder, files=GPT2_FILES):
    """The folder of a GPT-2 model: a folder as given, or, for a model's name, its folder in
    the cache, with whatever of `files` is missing downloaded first (--tokenize needs only
    the tokenizer's two files, not the 500 MB of weights)."""
    if os.path.isdir(name_or_folder):
        return name_or_folder
    if name_or_folder not in HUB_MODELS:
        raise BadInput(f"--gpt2 {name_or_folder}: no such folder, nor a model to download ("
                       + ", ".join(HUB_MODELS) + ")")
    folder = os.path.join(user_cache_dir(), name_or_folder)
    missing = [f for f in files if not os.path.exists(os.path.join(folder, f))]
    if missing:
        # MICROGPT_HUB_URL points elsewhere: a mirror, or the tests' local server.
        base = os.environ.get("MICROGPT_HUB_URL", "https://huggingface.co").rstrip("/")
        repo, size = HUB_MODELS[name_or_folder]
        size = f"about {size}" if "model.safetensors" in missing else "its tokenizer, under 2 MB"
        print(f"downloading {name_or_folder} ({size}) from {base}/{repo} into {folder}", file=sys.stderr,
              flush=True)
        try:
            os.makedirs(folder, exist_ok=True)
        except OSError as e:
            raise BadInput(f"cannot make the cache folder {folder}: {e.strerror or e}") from None
        for filename in missing:
            download(f"{base}/{repo}/resolve/main/{filename}", os.path.join(folder, filename))
            if filename == "config.json":         # before the big file: will the model fit at all?
                check_gpt2_memory(read_gpt2_config(folder))
    return folder


def check_gpt2_memory(config):
    """Refuse, up front and with the estimate, a GPT-2 that cannot fit in memory."""
    n_params, need = gpt2_memory(config)
    limit = memory_limit()
    if limit is not None and need > limit:
        raise BadInput(f"this GPT-2 would need about {format_bytes(need)} of memory ({n_params:,} parameters "
                       f"as 4-byte floats), more than the {format_bytes(limit)} there is")
    return n_params, need


# The command line for GPT-2: --gpt2 DIR|NAME with --prompt, --length, --temperature,
# --top-k, --ids, --explain and --report.

def gpt2_token_label(tok, token):
    """A token as it reads, in quotes so that its spaces show: ' the', '\\n'; a token that
    is part of a character, as its bytes: b'\\xe2\\x80'."""
    try:
        return repr(tok.decode_bytes([token]).decode("utf-8"))
    except UnicodeDecodeError:
        return repr(tok.decode_bytes([token]))


def encode_for_gpt2(what, text, tok, config, room=0):
    """tok.encode(text), refused if it leaves fewer than `room` of the model's positions free."""
    ids = tok.encode(text)
    if len(ids) + room > config.n_positions:
        raise BadInput(f"{what} is {len(ids)} tokens" + (f", plus --length {room}," if room else "")
                       + f" more than GPT-2's context of {config.n_positions} tokens")
    return ids


def print_gpt2_text(prompt_ids, show_prompt, length, w, config, tok, args):
    """Write `length` tokens after the prompt, each printed as soon as it is chosen (as text,
    or with --ids as ids), and the time per token on stderr. Bytes are decoded as a
    stream, so a character split over two tokens is printed whole, when its last byte comes."""
    rng = random.Random(args.seed)
    decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
    if show_prompt and not args.ids:
        print(visible(decoder.decode(tok.decode_bytes(prompt_ids))), end="", flush=True)
    print(f"reading the prompt ({len(prompt_ids)} tokens), then writing {length}", file=sys.stderr, flush=True)
    times, started = [], time.perf_counter()
    for i, token in enumerate(generate(prompt_ids, length, w, config, args.temperature, args.top_k, rng)):
        times.append(time.perf_counter())
        print(f"{' ' if i else ''}{token}" if args.ids else visible(decoder.decode(tok.decode_bytes([token]))),
              end="", flush=True)
        if output_lost():
            return
    print(visible(decoder.decode(b"", final=True)) if not args.ids else "", flush=True)
    steps = [b - a for a, b in zip(times, times[1:])]
    each = f"; then {sorted(steps)[len(steps) // 2]:.2f} s per token (median of {len(steps)})" if steps else ""
    print(f"prompt and first token: {times[0] - started:.1f} s{each}", file=sys.stderr)


def print_gpt2_explanation(tokens, rows, tok):
    """--explain for GPT-2: at each position, the token read, the five likeliest next tokens
    with their probabilities, and the probability the model gave the token that came next."""
    labels = [gpt2_token_label(tok, t) for t in tokens]
    width = max(12, max(len(label) for label in labels))
    print(f"{'pos':>3}  {'token':<{width}} {'top 5 next-token predictions':<75} next token's p")
    for pos, (probs, _) in enumerate(rows):
        top = sorted(range(len(probs)), key=probs.__getitem__, reverse=True)[:5]
        guesses = "  ".join(f"{gpt2_token_label(tok, t)} {probs[t]:.2f}" for t in top)
        nxt = f"{labels[pos + 1]} {probs[tokens[pos + 1]]:.3f}" if pos + 1 < len(tokens) else ""
        print(f"{pos:>3}  {labels[pos]:<{width}} {guesses:<75} {nxt}")


def run_gpt2(args):
    """--gpt2: load (or first download) a GPT-2, then write after --prompt, --explain a text,
    or draw --report. Returns the exit code."""
    for_names = [flag for flag, value in (
        ("--input", args.input), ("--stream", args.stream), ("--steps", args.steps), ("--load", args.load),
        ("--save", args.save), ("--chain", args.chain), ("--batch", args.batch), ("--lr", args.lr),
        ("--n-layer", args.n_layer), ("--n-embd", args.n_embd), ("--n-head", args.n_head),
        ("--block-size", args.block_size), ("--num-samples", args.num_samples), ("--plain", args.plain),
        ("--bpe", args.bpe)) if value not in (None, False)]
    if for_names:
        raise BadInput(f"{', '.join(for_names)}: only for microgpt's own models, not with --gpt2")
    if args.temperature is None:
        args.temperature = Config().temperature          # the same default as for names
    if not (math.isfinite(args.temperature) and args.temperature >= 0):
        raise BadInput(f"--temperature must be 0 (greedy) or a positive number, not {args.temperature}")
    if args.top_k is not None and args.top_k < 1:
        raise BadInput(f"--top-k must be at least 1, not {args.top_k}")
    length = 40 if args.length is None else args.length
    if length < 1:
        raise BadInput(f"--length must be at least 1, not {length}")
    if args.explain == "":
        raise BadInput("--explain needs a text to explain, not an empty string")
    if args.report and not (args.explain or args.prompt):
        raise BadInput("--report with --gpt2 draws what GPT-2 makes of a text: give it --explain TEXT or --prompt TEXT")
    if args.report:
        check_can_write(args.report, is_microgpt_report, "page written by microgpt --report")
    folder = gpt2_folder(args.gpt2)
    weights_path = os.path.join(folder, "model.safetensors")
    if not os.path.exists(weights_path) and os.path.exists(os.path.join(folder, "pytorch_model.bin")):
        raise BadInput(f"{folder} has pytorch_model.bin but no model.safetensors: microgpt reads only "
                       "safetensors, because loading a .bin (a pickle) can run any code its author put in it")
    if not os.path.isfile(weights_path):       # a dangling link, a loop, a FIFO or /dev/zero: say which
        dangling = os.path.islink(weights_path) and not os.path.exists(weights_path)
        what = ("a symlink to nothing (or a symlink loop)" if dangling
                else "not a regular file" if os.path.lexists(weights_path) else None)
        raise BadInput(f"{weights_path} is {what}" if what else f"{folder} has no model.safetensors")
    config = read_gpt2_config(folder)
    n_params, need = check_gpt2_memory(config)
    tok = read_gpt2_tokenizer(folder)
    if len(tok) != config.vocab_size:
        raise BadInput(f"{folder}: vocab.json has {len(tok):,} tokens, but config.json's vocab_size is "
                       f"{config.vocab_size:,}: they do not belong together")
    gpt2_tensors(weights_path, config)     # a damaged file is refused now, not after the prompt is read
    generating = args.prompt is not None or (args.explain is None and not args.report)
    prompt_ids = encode_for_gpt2("--prompt", args.prompt or "", tok, config, length if generating else 0)
    if not prompt_ids and generating:     # no prompt: start from <|endoftext|>, as after a document
        if GPT2_EOT >= config.vocab_size:
            raise BadInput("this model has no <|endoftext|> token to start from: give a --prompt")
        prompt_ids = [GPT2_EOT]
    inspected = encode_for_gpt2("--explain", args.explain, tok, config) if args.explain else prompt_ids
    started = time.perf_counter()
    w = load_gpt2(weights_path, config)
    if time.perf_counter() - started > 1:
        print(f"loaded in {time.perf_counter() - started:.1f} s", file=sys.stderr, flush=True)
    if args.explain is not None or args.report:
        if n_params > 10**7:                 # seconds per token: say what the wait is for
            print(f"reading the {len(inspected)} tokens to look inside", file=sys.stderr, flush=True)
        rows = gpt2_explain(inspected, w, config)
        if args.explain is not None:
            print_gpt2_explanation(inspected, rows, tok)
        if args.report:
            try:
                check_can_write(args.report, is_microgpt_report, "page written by microgpt --report")   # again
                write_atomically(args.report, gpt2_report_page(args.gpt2, config, n_params, inspected, rows, tok))
            except OSError as e:
                raise BadInput(f"cannot write {args.report}: {e.strerror or e}") from None
            print(f"wrote {visible(args.report, keep='')}", file=sys.stderr)
    if generating:
        print_gpt2_text(prompt_ids, bool(args.prompt), length, w, config, tok, args)
    return 0


# ---------------------------------------------------------------------------------------
# Pictures: --report FILE.html
#
# The same looks inside, drawn for people who would rather see than read tables, and for a
# teacher to project: one HTML page with the loss curve, what the model writes as it
# learns, the embeddings, what it predicts and where it looks inside a few names, its final
# samples shaded by probability, and (for a small model of continuous text) its Markov
# chain. Every picture is inline SVG drawn by one of the short functions below (a line
# chart, a heat map, a scatter plot, a graph), or an HTML table, and each has a caption
# computed from this run's numbers: what to notice in it. There is no JavaScript and
# nothing is fetched, so the page opens offline, prints, and can be sent to a class as one
# file. The numbers behind the pictures are in the page too, as JSON.
#
# Pictures scale with the page (an SVG viewBox, 100% wide, at most 1.6 times its own size):
# the text in them scales too, so each is drawn small enough that at 1280 px its smallest
# text is at least 14 px, and big enough to read on a phone. Labels are placed where they
# touch nothing else (place_label), and the layouts are checked in a real browser, at 480
# to 1920 px, by tests/test_report_layout.py. A pure-CSS presentation view shows one
# picture per screen in large type: each picture is a target (#fig-1, ...) with links to
# the previous and next one.
#
# Colours: VIRIDIS (dark blue-purple to yellow) for amounts from 0 up, such as
# probabilities and attention, and BLUE_ORANGE (blue below 0, white at 0, orange above)
# for weights, which have a sign. Both stay readable for colour-blind readers, and every
# heat map has a legend.
# ---------------------------------------------------------------------------------------

VIRIDIS = ["#440154", "#482878", "#3e4989", "#31688e", "#26828e", "#1f9e89", "#35b779", "#6ece58",
           "#b5de2b", "#fde725"]
BLUE_ORANGE = ["#2166ac", "#4393c3", "#92c5de", "#d1e5f0", "#f7f7f7", "#fee0b6", "#fdb863", "#e08214",
               "#b35806"]
TOKEN_COLOURS = ["#0072b2", "#d55e00", "#009e73", "#cc79a7", "#56b4e9", "#e69f00", "#000000"]   # Okabe and Ito's
REPORT_MARK = '<meta name="generator" content="microgpt">'   # how we know a page is ours
FONT = 15              # the smallest text in a picture, in the picture's own units
PRESENT_FONT = 26      # the same in a heat map's copy for the presentation view (drawn smaller there)
CHAIN_FONT = 20        # the Markov chain graph's text: one drawing serves the page and its slide, where it is
                       # shown at about 0.95 of its size on a 1024x768 screen and must still be 18 px
CHAR_WIDTH = 0.62      # a character's width, in font sizes (a little more than the usual fonts need)


def colour_at(palette, t):
    """The colour a fraction t (0 to 1) of the way along a palette, blending neighbours."""
    t = min(1.0, max(0.0, t)) * (len(palette) - 1)
    i = min(int(t), len(palette) - 2)
    a, b, f = palette[i], palette[i + 1], t - i
    return "#" + "".join(f"{round(int(a[k:k + 2], 16) * (1 - f) + int(b[k:k + 2], 16) * f):02x}"
                         for k in (1, 3, 5))


def ink_on(background):
    """Black or white text, whichever reads better on this background colour."""
    r, g, b = (int(background[k:k + 2], 16) for k in (1, 3, 5))
    return "#000" if 0.299 * r + 0.587 * g + 0.114 * b > 128 else "#fff"


def escape(text):
    """Text made safe inside HTML or SVG, between tags or in a quoted attribute. Without this
    a data file holding '<' or '&' could break the page, or worse, add to it."""
    return (str(text).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
            .replace('"', "&quot;").replace("'", "&#39;"))


def percent(p):
    """A probability as a percentage with two significant digits or so: 43%, 4.3%, 0.43%,
    and below that 0.0016% or 3.7e-06%: never 0.00% for a token that was drawn or is true
    (a model of thousands of tokens, barely trained, gives many of them less than 0.005%)."""
    if p >= 0.00095 or p == 0:
        return f"{p:.0%}" if p >= 0.095 or p == 0 else f"{p:.1%}" if p >= 0.0095 else f"{p:.2%}"
    return f"{100 * p:#.2g}%"         # '#' keeps a trailing zero: 0.020%, as 0.10% above


def text_at(x, y, text, size=FONT, anchor="start", attrs=""):
    """An SVG text element; (x, y) is the start, middle or end of its baseline."""
    return f'<text x="{x:.1f}" y="{y:.1f}" font-size="{size:g}" text-anchor="{anchor}"{attrs}>{escape(text)}</text>'


def text_box(x, y, text, size=FONT, anchor="start"):
    """The box (x0, y0, x1, y1) that text_at(x, y, text, size, anchor) covers, a little generously."""
    width = len(str(text)) * size * CHAR_WIDTH
    x0 = x - width / 2 if anchor == "middle" else x - width if anchor == "end" else x
    return (x0, y - 0.95 * size, x0 + width, y + 0.3 * size)


def overlap(a, b, gap=2.0):
    """Whether two boxes overlap, or come closer than gap."""
    return a[0] < b[2] + gap and b[0] < a[2] + gap and a[1] < b[3] + gap and b[1] < a[3] + gap


def place_label(text, size, candidates, taken, bounds):
    """The first of the candidate places [(x, y, anchor)] where the text stays inside bounds
    (x0, y0, x1, y1) and touches no box in taken; that box is then taken. None if every
    place is in use: better a label left out than two on top of each other."""
    for x, y, anchor in candidates:
        box = text_box(x, y, text, size, anchor)
        inside = bounds[0] <= box[0] and box[2] <= bounds[2] and bounds[1] <= box[1] and box[3] <= bounds[3]
        if inside and not any(overlap(box, other) for other in taken):
            taken.append(box)
            return x, y, anchor
    return None


def svg(width, height, body, title, grow=1.6):
    """An SVG picture that fills the width the page gives it, up to `grow` times its own
    size; its title is what a screen reader (or a hovering mouse) gets."""
    return (f'<svg viewBox="0 0 {width:.0f} {height:.0f}" width="100%" style="max-width:{width * grow:.0f}px" '
            f'role="img"><title>{escape(title)}</title>{"".join(body)}</svg>')


def chart_key(items):
    """A legend under a picture, in HTML (so it wraps on a narrow screen): [(swatch, text)],
    the swatch being a CSS style for a small box, or a character to show."""
    out = []
    for swatch, text in items:
        mark = (f'<span class="mark">{escape(swatch)}</span>' if ":" not in swatch
                else f'<span class="swatch" style="{swatch}"></span>')
        out.append(f"<li>{mark}{escape(text)}</li>")
    return f'<ul class="key">{"".join(out)}</ul>'


def nice_ticks(lo, hi, count=5):
    """Round numbers (steps of 1, 2 or 5 times a power of 10) from lo to hi, for an axis."""
    if hi <= lo:
        return [lo]
    step = 10 ** math.floor(math.log10((hi - lo) / count))
    step *= next(m for m in (1, 2, 5, 10) if (hi - lo) / (step * m) <= count)
    first = math.ceil(lo / step - 1e-9) * step
    return [first + i * step for i in range(int((hi - first) / step + 1e-9) + 1)]


def colour_legend(x, y, palette, lo, hi, caption, width=150, ticks=None, font=FONT):
    """A colour bar from lo to hi, its ends and middle labelled (or `ticks`: [(fraction of
    the way, text)]), and its caption underneath: the key to a heat map. 3.2 fonts tall."""
    n = 24
    body = [f'<rect x="{x + i * width / n:.1f}" y="{y:.1f}" width="{width / n + 0.3:.1f}" height="10" '
            f'fill="{colour_at(palette, i / (n - 1))}"/>' for i in range(n)]
    for t, text in ticks or [(t, f"{lo + t * (hi - lo):.2g}") for t in (0, 0.5, 1)]:
        anchor = "start" if t == 0 else "end" if t == 1 else "middle"
        body.append(text_at(x + t * width, y + 12 + font, text, font, anchor))
    body.append(text_at(x, y + 14 + 2.2 * font, caption, font))
    return body


def line_chart(lines, x_map, x_ticks, y_range, x_label, y_label, title, hlines=(), width=620, height=370,
               font=FONT + 2, marks=()):
    """Lines on labelled axes (the legend goes under the picture: chart_key).
    lines: [([(x, y)], colour, stroke width, opacity, dots?)]; hlines: [(y, colour)], dashed
    lines across; x_map(x) runs from 0 at the left edge to 1 at the right (so the axis may be
    logarithmic), x_ticks: [(x, text)]. A point beyond y_range is drawn on the edge, so that
    one outlier cannot squash the whole chart; marks: [(x, up?)], a red triangle on the top
    (up) or bottom edge at each x, pointing the way such points went (edge_marks). font is
    the size of its text (larger for the presentation view's copy)."""
    y0, y1 = y_range
    y_ticks = nice_ticks(y0, y1)
    widest = max(len(f"{t:g}") for t in y_ticks) * font * CHAR_WIDTH
    more = font - FONT - 2                      # larger text takes more room beside and under the axes
    y_len = len(y_label) * font * CHAR_WIDTH
    height = max(height, y_len + 8)             # room for the y title, written upwards
    left, top, bottom = max(70, 40 + widest + more), 12, 70 + 2 * more    # the y title, the numbers
    right = max(30, len(x_ticks[-1][1]) * font * CHAR_WIDTH / 2 + 4) if x_ticks else 30   # the last tick's half
    plot_w, plot_h = width - left - right, height - top - bottom

    def X(x):
        return left + x_map(x) * plot_w

    def Y(y):
        return top + plot_h - (min(max(y, y0), y1) - y0) / ((y1 - y0) or 1) * plot_h
    body = []
    for t in y_ticks:
        body.append(f'<line x1="{left:.1f}" x2="{width - right}" y1="{Y(t):.1f}" y2="{Y(t):.1f}" stroke="#ddd"/>')
        body.append(text_at(left - 8, Y(t) + 6, f"{t:g}", font, "end"))
    kept = []                                   # x ticks far enough apart to be read; the last one always
    for i, (x, text) in enumerate(x_ticks):
        box = text_box(X(x), 0, text, font, "middle")
        while kept and overlap(box, kept[-1][2], 6) and i == len(x_ticks) - 1:
            kept.pop()
        if not kept or not overlap(box, kept[-1][2], 6):
            kept.append((x, text, box))
    for x, text, _ in kept:
        body.append(f'<line x1="{X(x):.1f}" x2="{X(x):.1f}" y1="{top + plot_h}" y2="{top + plot_h + 5}" '
                    'stroke="#333"/>')
        body.append(text_at(X(x), top + plot_h + 8 + font, text, font, "middle"))
    body.append(f'<rect x="{left:.1f}" y="{top}" width="{plot_w:.1f}" height="{plot_h}" fill="none" stroke="#333"/>')
    body.append(text_at(left + plot_w / 2, height - 10, x_label, font, "middle"))
    yc = min(max(top + plot_h / 2, y_len / 2 + 4), height - y_len / 2 - 4)     # the y title inside the picture
    yx = 22 + 0.75 * more
    body.append(text_at(yx, yc, y_label, font, "middle", f' transform="rotate(-90 {yx:g} {yc:.1f})"'))
    for y, colour in hlines:
        body.append(f'<line x1="{left:.1f}" x2="{width - right}" y1="{Y(y):.1f}" y2="{Y(y):.1f}" stroke="{colour}" '
                    'stroke-width="1.5" stroke-dasharray="6 4"/>')
    for points, colour, stroke, opacity, dots in lines:
        if not points:
            continue
        path = "M" + " L".join(f"{X(x):.1f},{Y(y):.1f}" for x, y in points)
        body.append(f'<path d="{path}" fill="none" stroke="{colour}" stroke-width="{stroke}" '
                    f'stroke-opacity="{opacity}" stroke-linejoin="round"/>')
        if dots or len(points) == 1:         # a line of one point would not show
            body += [f'<circle cx="{X(x):.1f}" cy="{Y(y):.1f}" r="4" fill="{colour}"/>' for x, y in points]
    for x, up in marks:
        tip, base = (top, top + 8) if up else (top + plot_h, top + plot_h - 8)
        body.append(f'<path d="M{X(x):.1f},{tip} L{X(x) - 4:.1f},{base} L{X(x) + 4:.1f},{base} z" fill="#c00"/>')
    return svg(width, height, body, title, grow=1.35)


def edge_marks(xs, x_map, apart=0.02):
    """The x of each red triangle for points at xs beyond a chart's edge: one for each group of
    points closer than `apart` (a share of the axis: 2% is wider than a triangle, which is 8 of
    the 500 or more units of a line_chart's axis) to the group's first, at that first point,
    so that no two triangles overlap into what looks like one."""
    marks = []
    for x in sorted(xs):
        if not marks or x_map(x) - x_map(marks[-1]) >= apart:
            marks.append(x)
    return marks


def heat_map(matrix, row_labels, col_labels, palette, lo, hi, x_title, y_title, legend, title, font=FONT, keep=()):
    """A matrix as a grid of coloured cells: rows labelled on the left with y_title beside
    them, columns on top with x_title above, and a colour bar underneath. Labels that would
    touch are thinned out (every second one, or third...), and column labels longer than a
    cell is wide are written upwards. A cell that is None is left empty (attention to later
    positions, which the model cannot see). Hovering over a cell shows its number. font is
    the size of its text: PRESENT_FONT for the presentation view, where it must fill less room.
    keep: rows whose labels are shown first (the ones a caption names), the thinned-out rest
    around them."""
    rows, cols = len(matrix), len(matrix[0])
    line = 1.25 * font
    # Long row labels (tokens of many characters) are cut to 12 characters, and the cells
    # get narrower, so that the picture stays about 400 units wide: the page shows three
    # pictures side by side at 1280 px, each about 380 px wide, and a wider picture would
    # be drawn with its text smaller than 14 px.
    row_labels = [name if len(name) <= 12 else name[:11] + "\u2026" for name in row_labels]
    row_w = max(len(name) for name in row_labels) * font * CHAR_WIDTH
    left = 8 + line + 6 + row_w + 6
    cell_w = max(10.0, min(24.0, 300 / cols, (400 * font / FONT - left - 10) / cols))
    cell_h = max(4.0, min(24.0, 600 / rows))
    col_w = max(len(name) for name in col_labels) * font * CHAR_WIDTH
    upwards = col_w + 4 > cell_w and line <= cell_w
    every_col = 1 if upwards else math.ceil((col_w + 6) / cell_w)
    every_row = math.ceil((line + 1) / cell_h)
    labelled = []                                # rows far enough apart: those in keep first
    for i in list(keep) + list(range(0, rows, every_row)) + list(range(rows)):
        if all(abs(i - j) >= every_row for j in labelled):
            labelled.append(i)
    grid_top = 6 + line + 6 + (col_w if upwards else line)
    grid_h, grid_w = rows * cell_h, cols * cell_w
    bar = min(200.0, max(130.0, grid_w))
    width = left + max(grid_w, bar, len(legend) * font * CHAR_WIDTH,
                       len(x_title) * font * CHAR_WIDTH) + 10
    height = grid_top + grid_h + 16 + 14 + 2.3 * font + 6
    y_len = len(y_title) * font * CHAR_WIDTH
    if y_len + 8 > height:                       # room for the y title, written upwards
        grid_top, height = grid_top + (y_len + 8 - height) / 2, y_len + 8
    body = [text_at(left, 6 + font, x_title, font)]
    mid = min(max(grid_top + grid_h / 2, y_len / 2 + 4), height - y_len / 2 - 4)
    body.append(text_at(8 + font, mid, y_title, font, "middle", f' transform="rotate(-90 {8 + font} {mid:.1f})"'))
    for j, name in enumerate(col_labels):
        if j % every_col == 0:
            x = left + (j + 0.5) * cell_w
            if upwards:
                body.append(text_at(x + 0.35 * font, grid_top - 4, name, font, "start",
                                    f' class="mono" transform="rotate(-90 {x + 0.35 * font:.1f} {grid_top - 4:.1f})"'))
            else:
                body.append(text_at(x, grid_top - 5, name, font, "middle", ' class="mono"'))
    for i, (name, row) in enumerate(zip(row_labels, matrix)):
        if i in labelled:
            body.append(text_at(left - 6, grid_top + (i + 0.5) * cell_h + 0.35 * font, name, font, "end",
                                ' class="mono"'))
        for j, value in enumerate(row):
            if value is not None:
                colour = colour_at(palette, (value - lo) / ((hi - lo) or 1))
                body.append(f'<rect x="{left + j * cell_w:.1f}" y="{grid_top + i * cell_h:.1f}" width="{cell_w:.1f}" '
                            f'height="{cell_h:.1f}" fill="{colour}"><title>{value:.3g}</title></rect>')
    body.append(f'<rect x="{left:.1f}" y="{grid_top:.1f}" width="{grid_w:.1f}" height="{grid_h:.1f}" fill="none" '
                'stroke="#999" stroke-width="0.5"/>')
    body += colour_legend(left, grid_top + grid_h + 16, palette, lo, hi, legend, bar, font=font)
    return svg(width, height, body, title, grow=max(1.0, min(1.6, 800 / height)))     # a tall one grows less


def scatter_plot(points, labels, title, x_label, y_label, size=340):
    """Labelled points on two axes of the same scale, so distances on the page are true.
    Each label goes beside its point where it touches no other label or point, further
    out (with a thin line back to its point) where the points are crowded, and is left out
    where there is no room at all. Returns (svg, the labels left out)."""
    pad, left, top = 22, 34, 6
    xs, ys = [x for x, _ in points], [y for _, y in points]
    span = max(max(xs) - min(xs), max(ys) - min(ys)) or 1.0
    cx, cy = (max(xs) + min(xs)) / 2, (max(ys) + min(ys)) / 2
    inner = size - 2 * pad
    where = [(left + size / 2 + (x - cx) / span * inner, top + size / 2 - (y - cy) / span * inner)
             for x, y in points]
    body = [f'<rect x="{left}" y="{top}" width="{size}" height="{size}" fill="none" stroke="#333"/>',
            text_at(left + size / 2, top + size + 6 + FONT, x_label, FONT, "middle"),
            text_at(8 + FONT, top + size / 2, y_label, FONT, "middle",
                    f' transform="rotate(-90 {8 + FONT} {top + size / 2})"')]
    taken = [(x - 3.5, y - 3.5, x + 3.5, y + 3.5) for x, y in where]
    bounds = (left + 1, top + 1, left + size - 1, top + size - 1)
    size_of = FONT + 1
    # The most crowded points choose first, while there is still room near them.
    crowd = [sum(math.hypot(x - a, y - b) < 30 for a, b in where) for x, y in where]
    labels_out, missing = [], []
    for k in sorted(range(len(where)), key=lambda k: -crowd[k]):
        x, y = where[k]
        candidates = []
        for d in (6, 14, 24, 36):
            candidates += [(x + d, y + 5, "start"), (x - d, y + 5, "end"), (x, y - d, "middle"),
                           (x, y + d + 10, "middle"), (x + d, y - d + 4, "start"), (x - d, y - d + 4, "end"),
                           (x + d, y + d + 6, "start"), (x - d, y + d + 6, "end")]
        place = place_label(labels[k], size_of, candidates, taken, bounds)
        if place:
            lx, ly, anchor = place
            if abs(lx - x) > 8 or ly - y > 18 or y - ly > 8:          # placed away: a line back to the point
                box = text_box(lx, ly, labels[k], size_of, anchor)
                tx, ty = min(max(x, box[0]), box[2]), min(max(y, box[1]), box[3])
                body.append(f'<line x1="{x:.1f}" y1="{y:.1f}" x2="{tx:.1f}" y2="{ty:.1f}" stroke="#999" '
                            'stroke-width="0.8"/>')
            labels_out.append(text_at(lx, ly, labels[k], size_of, anchor, ' class="mono"'))
        else:
            missing.append(labels[k])
    body += [f'<circle cx="{x:.1f}" cy="{y:.1f}" r="3.5" fill="#2166ac"/>' for x, y in where]
    return svg(left + size + 10, top + size + 14 + FONT, body + labels_out, title), missing


def top_components(rows, count=2, iterations=200):
    """The `count` directions along which the rows vary most (principal components), with the
    variance along each, by power iteration: multiplying a vector by the covariance matrix
    again and again turns it towards the direction of greatest variance. Removing the
    directions already found at every step gives the next one. Returns (mean, [(variance, direction)])."""
    n = len(rows[0])
    mean_row = [sum(column) / len(rows) for column in zip(*rows)]
    centred = [[x - m for x, m in zip(row, mean_row)] for row in rows]
    cov = [[sum(r[i] * r[j] for r in centred) / len(rows) for j in range(n)] for i in range(n)]
    found = []
    for c in range(count):
        v = [1.0 + 0.1 * i for i in range(n)]        # any start that is not at right angles to the answer
        for _ in range(iterations):
            w = [sum(map(mul, row, v)) for row in cov]
            for _, u in found:                       # stay at right angles to the earlier directions
                d = sum(map(mul, w, u))
                w = [wi - d * ui for wi, ui in zip(w, u)]
            norm = math.sqrt(sum(wi * wi for wi in w))
            if norm == 0:
                break
            v = [wi / norm for wi in w]
        if max(v, key=abs) < 0:                      # a direction and its opposite are the same: pick one
            v = [-vi for vi in v]
        variance = sum(vi * wi for vi, wi in zip(v, [sum(map(mul, row, v)) for row in cov]))
        found.append((variance, v))
    return mean_row, found


def de_bruijn_order(vocab_size, length):
    """Every state (a tuple of `length` tokens) in the order of a de Bruijn sequence, the
    cyclic sequence in which each state occurs exactly once as a window: sliding the window
    one token along gives the next state. Drawn around a circle in this order, one move out
    of every state goes to its neighbour, and the graph has far fewer crossing arrows.
    (The classic construction from Lyndon words, after Fredricksen, Kessler and Maiorana.)"""
    a, sequence = [0] * (vocab_size * length + 1), []

    def extend(t, p):
        if t > length:
            if length % p == 0:
                sequence.extend(a[1:p + 1])
            return
        a[t] = a[t - p]
        extend(t + 1, p)
        for j in range(a[t - p] + 1, vocab_size):
            a[t] = j
            extend(t + 1, t)
    extend(1, 1)
    cyclic = sequence + sequence[:length - 1]
    return [tuple(cyclic[i:i + length]) for i in range(len(sequence))]


def chain_graph(chain, names):
    """A Markov chain of at most 16 states: the states around a circle (in de Bruijn order),
    an arrow for each move at least CHAIN_MIN_PROBABILITY likely, as wide as its probability
    and coloured by the token read (TOKEN_COLOURS), labelled with its probability where the
    label touches nothing else. Returns (svg, how many labels were left out)."""
    n, size, font = len(chain), 640, CHAIN_FONT
    centre, radius = size / 2, size / 2 - 80
    # A state's circle is wide enough for its name in full-size type, but never so wide that
    # it touches its neighbours. A name of several tokens (BPE, "110 110") is written one
    # token a line when that needs a smaller circle: a long line would need the widest one.
    lines = {state: [state_name(state, names)] for state, _ in chain}
    # (the radius that fits: a little more than half the diagonal of the lines' box)
    fits = lambda rows: math.hypot(max(map(len, rows)) * font * CHAR_WIDTH, len(rows) * 1.15 * font) / 1.8
    if max(fits(name[0].split(" ")) for name in lines.values()) < max(map(fits, lines.values())):
        lines = {state: name[0].split(" ") for state, name in lines.items()}
    need = max(map(fits, lines.values()))
    node = max(24.0, min(need, 0.4 * 2 * radius * math.sin(math.pi / max(n, 2))))
    radius -= 3 * (node - 24)                # a loop reaches 3 node radii out: keep it in the picture
    where = {}
    for i, state in enumerate(de_bruijn_order(len(names), len(chain[0][0]))):
        angle = -math.pi / 2 + 2 * math.pi * i / n
        where[state] = (centre + radius * math.cos(angle), centre + radius * math.sin(angle))

    def towards(ax, ay, bx, by, r):          # the point r from (ax, ay) on the way to (bx, by)
        d = math.hypot(bx - ax, by - ay) or 1
        return ax + (bx - ax) * r / d, ay + (by - ay) * r / d

    colour = lambda t: TOKEN_COLOURS[t % len(TOKEN_COLOURS)]
    body = ["<defs>" + "".join(
        f'<marker id="chain-arrow-{t}" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="11" markerHeight="11" '
        f'markerUnits="userSpaceOnUse" orient="auto"><path d="M0,0 L10,5 L0,10 z" fill="{colour(t)}"/></marker>'
        for t in range(len(names))) + "</defs>"]
    taken = [(x - node, y - node, x + node, y + node) for x, y in where.values()]
    wanted = []                              # (probability, colour, [candidate places]) for each arrow's label
    for state, probs in chain:
        x0, y0 = where[state]
        for t, p in enumerate(probs):
            if p < CHAIN_MIN_PROBABILITY:
                continue
            target = state[1:] + (t,)
            x1, y1 = where[target]
            style = (f'fill="none" stroke="{colour(t)}" stroke-opacity="0.8" stroke-width="{0.8 + 5 * p:.2f}" '
                     f'marker-end="url(#chain-arrow-{t})"')
            tip = f"<title>{escape(names[t])}: {percent(p)}</title>"
            if target == state:      # a loop: out of the circle and back
                ox, oy = (x0 - centre) / radius, (y0 - centre) / radius     # pointing outwards
                lx, ly = x0 + ox * 3 * node, y0 + oy * 3 * node
                sx, sy = x0 + ox * node - oy * node * 0.6, y0 + oy * node + ox * node * 0.6
                ex, ey = x0 + ox * node + oy * node * 0.6, y0 + oy * node - ox * node * 0.6
                body.append(f'<path d="M{sx:.1f},{sy:.1f} C{lx - oy * 2 * node:.1f},{ly + ox * 2 * node:.1f} '
                            f'{lx + oy * 2 * node:.1f},{ly - ox * 2 * node:.1f} {ex:.1f},{ey:.1f}" '
                            f'{style}>{tip}</path>')
                wanted.append((p, colour(t), [(lx + ox * d, ly + oy * d + font / 3, "middle")
                                              for d in (font, 1.6 * font, 2.3 * font, 0.3 * font)]))
                continue
            # A curve bending to the right of its direction, so A->B and B->A do not overlap,
            # cut short at both ends so that the arrowhead touches the circle of the state.
            dx, dy = x1 - x0, y1 - y0
            mx, my = (x0 + x1) / 2 - dy * 0.18, (y0 + y1) / 2 + dx * 0.18
            sx, sy = towards(x0, y0, mx, my, node)
            ex, ey = towards(x1, y1, mx, my, node + 1)
            body.append(f'<path d="M{sx:.1f},{sy:.1f} Q{mx:.1f},{my:.1f} {ex:.1f},{ey:.1f}" {style}>{tip}</path>')
            # The label sits on the curve, near the state it leaves if there is room there,
            # rather than in the middle of the circle, where the arrows cross.
            spots = []
            for s in (0.25, 0.35, 0.18, 0.45, 0.55, 0.65):
                a, b, c = (1 - s) ** 2, 2 * s * (1 - s), s * s
                spots.append((a * sx + b * mx + c * ex, a * sy + b * my + c * ey + font / 3, "middle"))
            wanted.append((p, colour(t), spots))
    labels, missing = [], 0
    for p, ink, spots in sorted(wanted, key=lambda label: -label[0]):     # likelier moves choose first
        text = percent(p)
        place = place_label(text, font, spots, taken, (0, 0, size, size))
        if place:
            labels.append(text_at(place[0], place[1], text, font, "middle", f' class="label mono" fill="{ink}"'))
        else:
            missing += 1
    for state, _ in chain:
        x, y = where[state]
        body.append(f'<circle cx="{x:.1f}" cy="{y:.1f}" r="{node:.1f}" fill="#fff" stroke="#333" '
                    'stroke-width="1.5"/>')
        # A name too long for its circle gets smaller type. A name of several lines is one
        # <text> (a <tspan> a line), so that its lines make one box.
        em, rows = font * min(1.0, node / need), lines[state]
        if len(rows) == 1:
            body.append(text_at(x, y + em / 3, rows[0], round(em, 1), "middle", ' class="mono"'))
        else:
            body.append(f'<text x="{x:.1f}" y="{y + em / 3 - (len(rows) - 1) * 0.575 * em:.1f}" '
                        f'font-size="{em:.1f}" text-anchor="middle" class="mono">'
                        + "".join(f'<tspan x="{x:.1f}" dy="{"1.15em" if i else 0}">{escape(row)}</tspan>'
                                  for i, row in enumerate(rows)) + "</text>")
    # grow 1: the page shows its text at CHAIN_FONT at most, a little larger than the page's own
    return svg(size, size, body + labels, f"the model as a Markov chain: {n} states", grow=1), missing


def long_run_shares(chain):
    """How much of its time the chain spends in each state in the long run (its stationary
    distribution): start anywhere and move, many times over. Half the weight stays put at
    each move, which changes nothing in the long run but stops a chain that cycles from
    bouncing between two answers for ever."""
    index = {state: i for i, (state, _) in enumerate(chain)}
    share = [1 / len(chain)] * len(chain)
    for _ in range(500):
        moved = [s / 2 for s in share]
        for (state, probs), s in zip(chain, share):
            for t, p in enumerate(probs):
                moved[index[state[1:] + (t,)]] += s * p / 2
        share = moved
    return share


TABLE_TOKEN_CHARS = 8      # a --bpe token longer than this is cut short in the predictions table


def prediction_table(example, names):
    """Per position: the token read; the true next token, the probability the model gave it
    and its loss; then the model's top guesses, the true one in orange. Every probability
    is a bar (never narrower than a hairline, so that 2% still shows) and a number. An HTML
    table, so that its text keeps its size on any screen; narrow screens show fewer guesses."""
    rows, inputs, targets = example["probs"], example["tokens"], example["targets"]
    k = min(5, len(rows[0]))

    def token(t, kind=""):      # a long token is cut short, with an ellipsis: hover shows it whole
        name = names[t]
        if len(name) <= TABLE_TOKEN_CHARS:
            return f'<span class="tok mono{kind}">{escape(name)}</span>'
        return (f'<span class="tok mono{kind}" title="{escape(name)}">'
                f'{escape(name[:TABLE_TOKEN_CHARS - 1])}\u2026</span>')

    def guess(t, p, true, extra=""):
        kind = " true" if true else ""
        return (f'<td class="guess{extra}">{token(t, kind)}'
                f'<span class="bar"><span class="fill{kind}" style="width:{100 * p:.1f}%"></span></span>'
                f'<span class="p">{percent(p)}</span></td>')
    long = ' long' * (len(rows) > 10)           # the presentation view packs a long example's rows closer
    # Tokens of more than 6 characters (--bpe) make every column wider: a slide shows one guess less.
    shown = set(inputs) | {t for t in targets if t is not None} | {
        t for probs in rows for t in sorted(range(len(probs)), key=lambda t: -probs[t])[:k]}
    long += ' wide' * any(len(names[t]) > 6 for t in shown)
    out = [f'<div class="scroll"><table class="predictions{long}"><tr><th>pos</th><th>reads</th><th>true next</th>'
           '<th>loss</th>' + "".join(f'<th class="g{j}">guess {j + 1}</th>' for j in range(k)) + "</tr>"]
    for pos, (probs, read, target) in enumerate(zip(rows, inputs, targets)):
        cells = [f"<td>{pos}</td>", f'<td>{token(read)}</td>']
        if target is None:
            cells += ["<td></td>", "<td></td>"]
        else:
            loss = -math.log(probs[target]) if probs[target] > 0 else float("inf")
            cells += [guess(target, probs[target], True), f"<td>{loss:.2f}</td>"]
        top = sorted(range(len(probs)), key=lambda t: -probs[t])[:k]
        cells += [guess(t, probs[t], t == target, f" g{j}") for j, t in enumerate(top)]
        out.append("<tr>" + "".join(cells) + "</tr>")
    return "".join(out) + "</table></div>"


def probability_shade(p):
    """The colour for a probability, on a log scale from 0.01 (dark) to 1 (yellow): most
    characters get 0.05 to 0.5, which a linear scale would paint almost alike."""
    return colour_at(VIRIDIS, (math.log10(max(p, 0.01)) + 2) / 2)


def shaded_text(tokens, probs):
    """A sample as HTML, each token (a character, or with --bpe a piece of text) on a
    background whose colour shows the probability the model gave it (probability_shade);
    hovering shows the number (three decimals, or two significant digits below 0.0005: a
    drawn token never shows as 0.000)."""
    out = []
    for ch, p in zip(tokens, probs):
        shown = "".join("\u21b5\n" if c == "\n" else (c if c.isprintable() else repr(c)[1:-1]) for c in ch)
        if p is None:
            out.append(f'<span title="given">{escape(shown)}</span>')
        else:
            colour, number = probability_shade(p), f"{p:.3f}" if p >= 0.0005 else f"{p:.2g}"
            out.append(f'<span style="background:{colour};color:{ink_on(colour)}" '
                       f'title="{number}">{escape(shown)}</span>')
    return "".join(out) or "<i>(empty)</i>"


def draw_samples(weights, config, chars, mode, prompt, stream_start, count, length):
    """`count` samples, as the token ids drawn, from a fresh sampling stream seeded as
    print_samples seeds it, so they are the samples the run prints (the first `count` of
    them). A stream's sample starts with the tokens it was given (the prompt)."""
    rng = random.Random(config.seed + 1)
    if mode == "docs":
        return [sample_document(weights, config, chars, rng, config.temperature, prompt, ids=True)
                for _ in range(count)]
    start = encode(prompt or stream_start, chars)
    return [start + list(sample_stream(weights, config, rng, config.temperature, start, length))
            for _ in range(count)]


def token_probabilities(ids, weights, config, chars, mode):
    """The probability the model gives each token of a sample (its token ids, as drawn: with
    --bpe, encoding its text again may cut it into other tokens, and more than the context
    holds), read as a document from BOS or as a stream with a sliding window (the stream's
    first token has none: None)."""
    bs = config.block_size
    if mode == "docs":
        inputs = ([len(chars)] + ids)[:min(len(ids), bs)]     # the sampler never draws more than block_size
        return [probs[t] for (probs, _), t in zip(explain(inputs, weights, config), ids)]
    found = [None]
    if len(ids) > 1:
        rows = explain(ids[:bs], weights, config)
        found += [probs[t] for (probs, _), t in zip(rows, ids[1:bs + 1])]
    for i in range(bs + 1, len(ids)):                 # beyond the context: the last block_size tokens
        found.append(explain(ids[i - bs:i], weights, config)[-1][0][ids[i]])
    return found


def example_sequences(mode, config, chars, explain_io, val_seqs, text, samples, count=3):
    """The (inputs, targets) the page looks inside: the --explain text if given, else a few
    held-out documents (or windows), else the first ones of the data, else samples (their
    token ids)."""
    if explain_io:
        return [explain_io]
    seqs = val_seqs[:count]
    if not seqs and text and mode == "docs":
        seqs = [encode_document(doc, chars) for doc in split_documents(text)[:count]]
    elif not seqs and text:
        tokens = encode(text, chars)
        step = config.block_size + 1
        seqs = [tokens[s:s + step] for s in range(0, max(1, len(tokens) - 1), step)][:count]
    if not seqs:            # an empty sample (a barely trained model's) has nothing to look inside
        seqs = [[len(chars)] + ids + [len(chars)] if mode == "docs" else ids for ids in samples if ids][:count]
    return [(seq[:-1][:config.block_size], seq[1:][:config.block_size]) for seq in seqs if len(seq) > 1]


def report_data(run):
    """The numbers behind the page, as they go into its JSON: what the run recorded, plus the
    model's probabilities and attention for each example and each final sample."""
    config, chars, weights = run["config"], run["chars"], run["weights"]
    examples = []
    for inputs, targets in run["examples"]:
        rows = explain(inputs, weights, config)
        nh = config.n_head
        examples.append({
            # the text the table covers: what the model reads, and the last token it predicts
            "text": decode(inputs + [t for t in targets[-1:] if t is not None], chars),
            "tokens": inputs, "targets": targets,
            "probs": [probs for probs, _ in rows],
            "attention": [[[heads[i * nh + h] for _, heads in rows] for h in range(nh)]
                          for i in range(config.n_layer)]})
    return {
        "format": "microgpt-report", "version": 1, "mode": run["mode"],
        "config": {key: getattr(config, key) for key in MODEL_SHAPE},
        "chars": chars, "bos": len(chars) if run["mode"] == "docs" else None,
        "steps": len(run["losses"]), "first_step": run.get("first", 0), "losses": run["losses"],
        "val_loss": run["val_loss"],
        "val_points": run["val_points"], "samples_during_training": run["snapshots"],
        "examples": examples, "samples": run["samples"],
        "sample_tokens": run["sample_ids"],
        "sample_probs": [token_probabilities(ids, weights, config, chars, run["mode"]) for ids in run["sample_ids"]],
    }


def figure(title, picture, caption, key="", big="", side=False, key_beside=False):
    """One picture: its title, the picture, its legend and its caption (what to notice). The
    presentation view shows one figure per screen (number_figures links them up), and `big`,
    if given, instead of the picture: the same drawn with larger text (PRESENT_FONT), for a
    picture that would otherwise shrink its text below what a room can read. side: on a
    landscape screen the presentation view puts the caption beside the picture rather than
    under it, which leaves a square picture (the Markov chain) more room. key_beside: there it
    puts the legend beside the picture instead, which leaves a long caption (the loss
    curve's) room under a wide picture."""
    big = f'<div class="big">{big}</div>' if big else ""
    return (f'<figure class="slide{" side" * side}{" keyside" * key_beside}"><h3>{escape(title)}</h3>'
            f'{big}{picture}{key}'
            f'<figcaption>{caption}</figcaption></figure>')


def number_figures(page):
    """Give every figure an id (fig-1, fig-2, ...) and, for the presentation view, links to
    the previous and the next one and back to the page."""
    parts = page.split('<figure class="slide')
    n = len(parts) - 1
    out = [parts[0]]
    for i, part in enumerate(parts[1:], start=1):
        more, part = part.split(">", 1)              # the rest of the class attribute: '"' or ' side"'
        before = f'<a href="#fig-{i - 1}">&lsaquo; previous</a>' if i > 1 else "<span></span>"
        after = f'<a href="#fig-{i + 1}">next &rsaquo;</a>' if i < n else '<a href="#top">end</a>'
        out.append(f'<figure class="slide{more} id="fig-{i}"><nav class="slidenav">{before}<span>{i} / {n}</span>'
                   f'{after}<a href="#top">close</a></nav>{part}')
    return "".join(out)


def centred_means(values, half):
    """Each value's mean with the `half` values on either side of it (fewer near the start,
    so that the window stays centred); None within `half` of the end, where the values after
    it do not exist yet. A trailing mean (like the progress line's last 100 steps) lags
    behind a falling loss by half its window; a centred one does not lag."""
    sums = [0.0]
    for v in values:
        sums.append(sums[-1] + v)
    out = []
    for i in range(len(values)):
        h = min(half, i)
        out.append(None if i + half >= len(values) else (sums[i + h + 1] - sums[i - h]) / (2 * h + 1))
    return out


def quantile(ordered, q):
    """The value a fraction q of the way through a sorted list."""
    return ordered[min(len(ordered) - 1, int(q * (len(ordered) - 1) + 0.5))]


def loss_section(run, vocab_size, what):
    """The loss curve (every step's loss, a smoothed line, the validation points and the
    loss of uniform guessing) on a logarithmic step axis (a linear one for a history that
    does not start at step 0), with a caption on this run. The steps are the model's: a
    fine-tuned model's history goes on from the run before (see continued)."""
    losses, val, uniform, first = run["losses"], run["val_points"], math.log(vocab_size), run.get("first", 0)
    if not losses:
        return ("<h2>The loss curve</h2>\n<p>This model was loaded and not trained in this run, and its checkpoint "
                "keeps no record of its training, so there is no loss curve.</p>")
    n, exact = len(losses), run["batch"].startswith("all ")     # every step on all the data: nothing to smooth
    half = 0 if exact else min(50, n // 10)
    smooth = centred_means(losses, half) if half else [None] * n
    ordered = sorted(losses)
    ys = [s for s in smooth if s is not None] + [v for _, v in val] + [uniform]
    if exact:                                    # no noise, so no outliers: show every step
        hi, lo = max(ys + ordered), min(ys + ordered)
    else:                                        # leave out the top and bottom 1% of a noisy loss
        hi, lo = max(ys + [quantile(ordered, 0.99)]), min(ys + [quantile(ordered, 0.01)])
    pad = 0.05 * (hi - lo) or 0.1
    y_range = (lo - pad, hi + pad)
    stride = max(1, n // 2000)                   # at most ~2000 points per line keeps the page small
    raw = [(first + i + 1, loss) for i, loss in enumerate(losses) if i < 200 or i % stride == 0]
    above = [(first + i + 1, loss) for i, loss in enumerate(losses) if loss > y_range[1]]
    below = [(first + i + 1, loss) for i, loss in enumerate(losses) if loss < y_range[0]]
    end_step, logarithmic = first + n, first == 0
    if logarithmic:
        ticks = [(0, "0")] + [(m * 10 ** e, f"{m * 10 ** e:,}") for e in range(13) for m in (1, 2, 5)
                              if m * 10 ** e < n] + [(n, f"{n:,}")]
        x_map, x_label = (lambda s: math.log1p(s) / math.log1p(n)), "training step (logarithmic scale)"
    else:
        ticks = [(t, f"{t:,}") for t in nice_ticks(first, end_step, 4)]
        x_map, x_label = (lambda s: (s - first) / n), "training step"
    lines = [(raw, "#2166ac" if exact else "#888", 2.5 if exact else 1.2, 1 if exact else 0.5, False),
             ([(first + i + 1, s) for i, s in enumerate(smooth) if s is not None], "#2166ac", 3, 1, False),
             (val, "#e08214", 2, 1, True)]
    ups, downs = (edge_marks([step for step, _ in out], x_map) for out in (above, below))
    marks = [(x, True) for x in ups] + [(x, False) for x in downs]
    chart = line_chart(lines, x_map, ticks, y_range, x_label, "loss (nats per token)", "loss while training",
                       [(uniform, "#000")], marks=marks)
    # The presentation view's copy: wider, so that its text stays large on a short slide.
    big = line_chart(lines, x_map, ticks, y_range, x_label, "loss (nats per token)", "loss while training",
                     [(uniform, "#000")], width=800, height=330, font=PRESENT_FONT, marks=marks)
    kind = run["batch"]
    subset = (f"the same {plural(run['val_subset'], 'held-out ' + what)} each time" if run["val_subset"]
              else f"held-out {what}s")
    key = [("border-top:4px solid #2166ac" if exact else "border-top:2px solid #999",
            f"each step's loss (on {kind})")]
    if half:
        key.append(("border-top:4px solid #2166ac", f"smoothed: mean of the {2 * half + 1} steps centred on each"))
    if val:
        key.append(("background:#e08214;border-radius:50%;width:12px", f"validation loss on {subset}"))
    key.append(("border-top:2px dashed #000", f"uniform guessing: ln {vocab_size} = {uniform:.2f}"))
    if above or below:
        key.append(("\u25b2", f"{len(above) + len(below)} step{'s' * (len(above) + len(below) > 1)} beyond the "
                              "edge of the chart"))

    # What to notice, from this run's numbers, each compared with its like.
    average = lambda xs: sum(xs) / len(xs)
    m = 1 if exact else max(1, min(100, n // 2))      # steps in each of the training loss's two means
    first_m, last_m = ("the first step", "the last") if m == 1 else (f"mean of the first {m} steps", f"the last {m}")
    notes = []
    training = (f"the training loss from {average(losses[:m]):.2f} ({first_m}) to {average(losses[-m:]):.2f} "
                f"({last_m})")
    if n == 1:
        training = f"the training loss of its one step was {losses[0]:.2f}"
    if len(val) >= 2:
        notes.append(f"On {subset} (orange), the loss fell from {val[0][1]:.2f} at step {val[0][0]:,} to "
                     f"{val[-1][1]:.2f} at step {val[-1][0]:,} (uniform guessing: {uniform:.2f}); {training}.")
    else:
        notes.append(f"The training loss went {training[18:]} (uniform guessing: {uniform:.2f})." if n > 1 else
                     f"The training loss of its one step was {losses[0]:.2f} (uniform guessing: {uniform:.2f}).")
    axis = "The step axis is logarithmic: each tenfold of steps (1 to 10, 10 to 100, ...) gets the same room."
    if len(val) >= 3 and val[0][0] == first and val[0][1] > val[-1][1]:
        middle = (val[0][1] + val[-1][1]) / 2
        k = next(step for step, loss in val if loss <= middle)
        said = f"Half of that drop came by step {k:,} ({(k - first) / n:.0%} of the steps shown)"
        if logarithmic and (k - first) / n <= 0.2:
            said += (": the logarithmic step axis gives each tenfold of steps the same room, so this fast start "
                     "is not squeezed against the left edge")
            axis = ""
        notes.append(said + ".")
    if logarithmic and axis:
        notes.append(axis)
    if exact:
        notes.append(f"Each step's loss is measured on {kind}, so it is exact and needs no smoothing.")
    elif half:
        notes.append(f"The blue line, the mean of the {2 * half + 1} steps centred on each, does not lag as the "
                     f"run's printed smoothed loss (the mean of the last {min(100, n)} steps) does; it stops {half} "
                     "steps before the end.")
    else:
        notes.append("Too few steps to smooth.")
    # The end of training against validation: the run's final validation loss on all the
    # held-out data if it is known (a few held-out names wobble), else the chart's last point.
    if run.get("val_count") and run["val_loss"] is not None:
        said = (f"At the end the validation loss on all {plural(run['val_count'], 'held-out ' + what)} is "
                f"{run['val_loss']:.4f}, as the run printed; it is ")
        gap = run["val_loss"] - average(losses[-m:])
    elif val:
        said = f"At step {val[-1][0]:,} the validation loss on those {what}s is {val[-1][1]:.2f}, "
        gap = val[-1][1] - average(losses[-m:])
    if val or run.get("val_count") and run["val_loss"] is not None:
        if m < 50 and not exact:             # a mean of a few steps' losses, each on a few names: noise
            said += (f"{abs(gap):.2f} {'above' if gap > 0 else 'below'} the training loss ("
                     + (f"a mean of only {m} steps' losses" if m > 1 else "one step's loss")
                     + f"): the run is too short to tell whether the model does better on the {what}s it trained on.")
        elif abs(gap) <= 0.05:
            said += f"close to the training loss: what the model learned holds for {what}s it never saw."
        elif gap > 0:
            said += f"{gap:.2f} above the training loss. " + gap_above(run.get("read"), what)
        else:
            said += (f"{-gap:.2f} below the training loss: the held-out {what}s happen to be easier than the "
                     f"average training {what}. That is chance, not a problem.")
        notes.append(said)
    else:
        notes.append("There was too little data to hold any out for validation.")
    def triangles(steps, marks):     # what the reader sees: steps close together share a triangle
        shown = "a red triangle" if len(marks) == 1 else f"{len(marks)} red triangles"
        return shown + ("" if len(marks) == len(steps) else ", as steps close together share one")
    if above:
        worst = max(above, key=lambda point: point[1])
        notes.append(f"{plural(len(above), 'step')} had a loss above the chart ({triangles(above, ups)}; "
                     f"the highest, {worst[1]:.2f}, at step {worst[0]:,})"
                     + (f" and {len(below):,} below it ({triangles(below, downs)})" if below else "")
                     + f": one hard {what}{' (or easy one)' * bool(below)} can do that, so the other steps set "
                     "the chart's range.")
    elif below:
        notes.append(f"{plural(len(below), 'step')} had a loss below the chart ({triangles(below, downs)}): "
                     f"one easy {what} can do that, so the other steps set the chart's range.")
    return ("<h2>The loss curve</h2>\n<div class=\"figures one\">"
            + figure("Loss while training", chart, " ".join(escape(s) for s in notes), chart_key(key), big,
                     key_beside=True) + "</div>")


def gap_above(read, what):
    """Why a validation loss is above the training loss, for the loss caption. read: (how
    much training data the run has trained on, how much there is, its unit, how the held-out
    part was chosen: data_read), or None if the page does not know (a loaded or fine-tuned
    model). Learning the training data by heart takes going over it at least once; before
    that, the held-out part may simply differ from the training part."""
    if read and read[0] >= read[1]:
        return (f"The model does better on the {what}s it trained on than on new ones: it has gone over its "
                f"training data {read[0] / read[1]:.1f} times, and is starting to learn it by heart.")
    if not read:
        return (f"The held-out {what}s may simply differ from the training ones, or the model may be starting "
                "to learn the training ones by heart.")
    seen, size, unit, held_out = read
    share = percent(seen / size) if seen / size < 0.99 else "almost all"
    return (f"That is not learning them by heart: the run trained on {seen:,} {unit}s, {share} of the "
            f"{size:,} in its training part, so it has not gone over them even once. {held_out}")


REPORT_MAX_ROWS = 256     # the most tokens a heat map, a scatter plot or the page's JSON lists
FEW_STEPS = 100           # fewer steps than this leave the position embeddings mostly their random start


def snapshots_section(run, mode, config, data_docs):
    """What the model writes at a few steps of its training, from the same sampling seed."""
    snaps = run["snapshots"]
    out = ["<h2>What the model writes as it learns</h2>\n<div class=\"scroll\"><table class=\"snapshots\">"
           "<tr><th>step</th><th>samples</th></tr>"]
    for snap in snaps:
        shown = (", ".join(s or "(empty)" for s in snap["samples"]) if mode == "docs"
                 else snap["samples"][0].replace("\n", "\u21b5"))     # one line per step: newlines as arrows
        out.append(f'<tr><td>{snap["step"]:,}</td><td class="sample">{escape(visible(shown))}</td></tr>')
    out.append("</table></div>")
    first, last = snaps[0]["samples"], snaps[-1]["samples"]
    notes = [f"Drawn with the same sampling seed each time (the final samples' seed), at temperature "
             f"{config.temperature}."]
    if snaps[0]["step"] == 0:
        notes.append("At step 0 the model is untrained and gives every token about the same probability, "
                     "so it writes random characters.")
    if mode == "docs":
        length = lambda texts: sum(map(len, texts)) / len(texts)
        said = f"The samples are {length(first):.1f} characters long on average at step {snaps[0]['step']:,}"
        said += f" and {length(last):.1f} at step {snaps[-1]['step']:,}"
        if data_docs:
            said += f" ({length(data_docs):.1f} in the data)"
            known = [s for s in last if s in set(data_docs)]
            what = sequence_word(run)
            said += (f"; at the end {len(known)} of {len(last)} "
                     + (f"are {what}s" if len(known) != 1 else f"is a {what}") + " from the data"
                     + (f" ({', '.join(visible(k) for k in known)})" if known else "")
                     + (", the others are new." if len(known) < len(last) else "."))
        else:
            said += "."
        notes.append(said)
    return "\n".join(out) + f'<p class="note">{escape(" ".join(notes))}</p>'


def row_sizes(matrix):
    """The root mean square of each row: how far a vector is from all zeros."""
    return [math.sqrt(sum(x * x for x in row) / len(row)) for row in matrix]


def embeddings_section(weights, config, names, chars, mode, data_docs, steps, what="document", said=None):
    """wte and wpe as heat maps on one colour scale, and the token embeddings on their top
    two principal components, each with a caption on what this run's numbers show. what: the
    word for one training sequence (sequence_word); said: the tokens as captions write them
    (caption_names; names, the labels, by default)."""
    said = said or names
    # float() reads the numbers out of Values too (with --plain, the weights are Part I's Values).
    wte, wpe = ([[float(x) for x in row] for row in weights[key]] for key in ("wte", "wpe"))
    m = max(abs(x) for row in wte + wpe for x in row) or 1.0          # one scale for both maps
    out = ["<h2>Embeddings</h2>\n<p class=\"note\">Each row is a token's (or a position's) vector of "
           f"{config.n_embd} numbers: blue below zero, orange above, on the same scale in both maps. Tokens the "
           "model treats alike get similar rows, and lie close together in the scatter plot.</p>"
           '<div class="figures">']
    dims = [str(j) for j in range(config.n_embd)]
    sizes = row_sizes(wte)
    big, small = max(range(len(sizes)), key=sizes.__getitem__), min(range(len(sizes)), key=sizes.__getitem__)
    caption = f"The longest vector belongs to {said[big]}, the shortest to {said[small]}."
    text = "".join(data_docs)
    if text and max(big, small) < len(chars):                # characters of the data (BOS is not one)
        share = lambda t: text.count(chars[t]) / len(text)
        caption += (f" {said[big]} is {share(big):.1%} of the characters of the data, "
                    f"{said[small]} {share(small):.1%}")
        caption += (": a token's row changes only when the token is in the step's text, so a rare one stays closer "
                    "to its small random start." if share(small) < share(big) else ".")
    if len(wte) > REPORT_MAX_ROWS:       # a huge vocabulary would make a page of many MB
        caption += f" (Drawn: the first {REPORT_MAX_ROWS} of {len(wte):,} tokens.)"
        wte = wte[:REPORT_MAX_ROWS]
    wte_map = lambda font: heat_map(wte, names, dims, BLUE_ORANGE, -m, m, "dimension", "token", "weight",
                                    "wte: token embeddings", font)
    # The presentation copy only for up to 128 tokens and 2,048 cells (128 of 16 dimensions): more
    # would not be read one by one on a screen anyway, and would double a page that is already large.
    out.append(figure("wte: token embeddings", wte_map(FONT), escape(caption),
                      big=wte_map(PRESENT_FONT) if len(wte) <= 128 and len(wte) * len(wte[0]) <= 2048 else ""))
    sizes = row_sizes(wpe)
    median = sorted(sizes)[len(sizes) // 2]
    pale = [p for p, s in enumerate(sizes) if s < 2 / 3 * median]
    if pale:
        caption = (f"Position{'s' * (len(pale) > 1)} {', '.join(map(str, pale))} stay{'s' * (len(pale) == 1)} "
                   "pale (small numbers, close to where training started)")
        reach = (sum(len(doc) >= pale[0] for doc in data_docs) / len(data_docs)
                 if mode == "docs" and data_docs and pale[0] > 0 else None)
        if reach is not None and reach < 0.5 and steps >= FEW_STEPS:
            caption += (f": only {reach:.1%} of the {what}s are long enough to reach position {pale[0]}, so "
                        "training seldom used them.")
        elif steps < FEW_STEPS:
            caption += (f"; but after only {plural(steps, 'step')} the run is too short to tell which positions "
                        "training uses most.")
        elif reach is not None:
            caption += (f", though {reach:.1%} of the {what}s are long enough to reach position {pale[0]}: "
                        "rare use alone does not explain it.")
        else:
            caption += "."
    elif steps < FEW_STEPS:
        caption = (f"No position stays pale, but after only {plural(steps, 'step')} the run is too short to tell "
                   "which positions training uses most.")
    else:
        caption = "No position stays pale: training used all of them" + (
            ", since every window fills the whole context." if mode == "stream" else ".")
    wpe_map = lambda font: heat_map(wpe, [str(p) for p in range(config.block_size)], dims, BLUE_ORANGE, -m, m,
                                    "dimension", "position", "weight", "wpe: position embeddings", font)
    out.append(figure("wpe: position embeddings", wpe_map(FONT), escape(caption),
                      big=wpe_map(PRESENT_FONT) if len(wpe) <= 128 and len(wpe) * len(wpe[0]) <= 2048 else ""))
    if config.n_embd >= 2 and len(wte) >= 3:
        mean_row, ((v1, c1), (v2, c2)) = top_components(wte)
        total = sum(sum((x - mu) ** 2 for x, mu in zip(row, mean_row)) for row in wte) / len(wte)
        points = [(sum((x - mu) * c for x, mu, c in zip(row, mean_row, c1)),
                   sum((x - mu) * c for x, mu, c in zip(row, mean_row, c2))) for row in wte]
        share = lambda v: f" ({v / total:.0%} of the variance)" if total else ""
        plot, missing = scatter_plot(points, names, "token embeddings, top two principal components",
                                     f"component 1{share(v1)}", f"component 2{share(v2)}")
        caption = pca_caption(wte, points, names, f"{what}s" if mode == "docs" else "the text", said)
        if missing:
            caption += (f" Where the points crowd, {len(missing)} label{'s are' if len(missing) > 1 else ' is'} "
                        "left out" + (f": {' '.join(said[names.index(m)] for m in sorted(missing))}."
                                         if len(missing) <= 20 else "."))
        out.append(figure("Token embeddings, top two principal components", plot, escape(caption)))
    return "\n".join(out) + "</div>"


def pca_caption(wte, points, names, where, said=None):
    """What the scatter plot shows: which tokens sit at either end of its horizontal axis,
    which are closest in the full embedding, and whether the vowels keep together. said: the
    tokens as the caption writes them (caption_names)."""
    said = said or names
    by_x = sorted(range(len(points)), key=lambda t: points[t][0])
    k = min(5, len(by_x) // 2)
    caption = (f"The horizontal axis (the direction in which the tokens differ most) runs from "
               f"{' '.join(said[t] for t in by_x[:k])} on the left to {' '.join(said[t] for t in by_x[-k:])} "
               "on the right.")
    pairs = sorted((math.dist(wte[a], wte[b]), a, b) for a in range(len(wte)) for b in range(a))
    caption += (" Closest together in all the dimensions: "
                + ", ".join(f"{said[b]} and {said[a]}" for _, a, b in pairs[:3]) + ".")
    vowels = [names.index(v) for v in "aeiou" if v in names]
    if len(vowels) == 5 and len(names) > 10:
        mid = sorted(x for x, _ in points)[len(points) // 2]
        sides = {points[t][0] < mid for t in vowels}
        if len(sides) == 1:
            caption += (f" All five vowels lie on the {'left' if sides == {True} else 'right'} half: the model "
                        f"learned that they play a similar part in {where}.")
    return caption


LEAN = 1.5     # a head "leans" towards a place only if it gives it this many times the even share


def head_habit(head):
    """What one attention head does, as a phrase: where its positions put their attention,
    on average: on the token before, on their own token, or on the first one, compared with
    what spreading it evenly would give. A place is named as the head's habit only if its
    share is at least LEAN times the even one: 26% where even gives 26% is no habit at all.
    head: [position][earlier position] weights."""
    rows = [row for row in head if len(row) >= 3] or [row for row in head if len(row) >= 2]
    if not rows:
        return "has only one position to look at"
    even = sum(1 / len(row) for row in rows) / len(rows)
    places = {"the token before": sum(row[-2] for row in rows) / len(rows),
              "its own token": sum(row[-1] for row in rows) / len(rows),
              "the first token": sum(row[0] for row in rows) / len(rows)}
    place, share = max(places.items(), key=lambda item: item[1])
    if share < LEAN * even:
        return (f"favours none of the token before, its own token or the first token: each gets less than {LEAN} "
                f"times the {even:.0%} that spreading its attention evenly would give (at most {share:.0%}, on "
                f"{place})")
    if share >= 0.4:
        return (f"looks mostly at {place}: {share:.0%} of its attention on average, where spreading it evenly "
                f"would give {even:.0%}")
    return (f"spreads its attention out, but leans towards {place}: {share:.0%} on average, at least {LEAN} times "
            f"the {even:.0%} that spreading it evenly would give")


def inside_section(example, names, what, n_head, heading="", said=None):
    """One example (an entry of report_data's "examples"): its predictions as a table, then
    one attention heat map per layer and head, each with a caption. heading: HTML that goes
    before the table and stays on the same printed page (the section's heading and intro:
    break-after:avoid alone does not keep them with a table in a grid). said: the tokens as
    the captions write them (caption_names)."""
    said = said or names
    inputs, targets, rows = example["tokens"], example["targets"], example["probs"]
    shown = "".join(ch if ch.isprintable() else repr(ch)[1:-1] for ch in example["text"])
    scored = [(rows[pos][t], pos) for pos, t in enumerate(targets) if t is not None]
    out = [f'<div class="keep">{heading}<div class="figures one">']
    caption = ""
    if scored:
        likeliest = lambda pos: max(range(len(rows[pos])), key=rows[pos].__getitem__)
        # A right guess: a position where the model's likeliest token is the true one.
        right = [(p, pos) for p, pos in scored if likeliest(pos) == targets[pos]]
        (p_hi, sure), (p_lo, worst) = max(right or scored), min(scored)
        guess = likeliest(worst)
        if right:
            caption = (f"Its surest right guess: {said[targets[sure]]} after {said[inputs[sure]]} (position "
                       f"{sure}), at {percent(p_hi)}. ")
        else:
            caption = (f"It guessed no position right (its likeliest token was never the true one); the true token "
                       f"it rated highest was {said[targets[sure]]} after {said[inputs[sure]]} (position {sure}), "
                       f"at {percent(p_hi)}. ")
        if p_lo < 0.5:
            caption += (f"Its biggest surprise: {said[targets[worst]]} after {said[inputs[worst]]} "
                        f"(position {worst}), "
                        f"at only {percent(p_lo)}" + (f"; it expected {said[guess]} ({percent(rows[worst][guess])})."
                                                       if guess != targets[worst] else "."))
        else:
            caption += f"Even the true token it expected least got {percent(p_lo)}."
    out.append(figure(f"Predictions for {shown}", prediction_table(example, names), escape(caption)))
    out.append('</div></div><div class="figures">')
    labels = [f"{p} {names[t]}" for p, t in enumerate(inputs)]
    for i, layer in enumerate(example["attention"]):
        for h, head in enumerate(layer):
            matrix = [row + [None] * (len(inputs) - len(row)) for row in head]   # later positions: blank
            title = f"layer {i} head {h}" if len(example["attention"]) > 1 or n_head > 1 else "attention"
            attention_map = lambda font: heat_map(matrix, labels, [names[t] for t in inputs], VIRIDIS, 0, 1,
                                                  "looks at", "position reading", "attention weight", title, font)
            # The slide's copy in larger type only for a long example: a short one's fits as it is.
            out.append(figure(f"Attention: {title}", attention_map(FONT),
                              escape(f"In {shown}, this head {head_habit(head)}."),
                              big=attention_map(PRESENT_FONT) if len(inputs) > 10 else ""))
    return "\n".join(out) + "</div>"


def chain_section(weights, config, names):
    """The model of continuous text as a Markov chain: a graph for up to 16 states, its
    transition matrix as a heat map beyond that (at most 256 states)."""
    chain = markov_chain(weights, config, len(names))
    shares = long_run_shares(chain)
    state_name_ = lambda state: state_name(state, names)
    top = sorted(range(len(chain)), key=lambda i: -shares[i])[:3]
    sure = sum(max(probs) >= 0.9 for _, probs in chain)
    caption = (f"In the long run the chain spends most of its time in "
               + ", ".join(f"{state_name_(chain[i][0])} ({shares[i]:.0%})" for i in top)
               + f". {sure or 'None'} of the {len(chain)} states {'is' if sure == 1 else 'are'} at least 90% sure "
               "of the next token.")
    intro = ("<h2>The model as a Markov chain</h2>\n<p class=\"note\">The model sees only the last "
             f"{config.block_size} tokens, so it is a Markov chain over those contexts (states): reading one more "
             "token moves it to the next state.</p>")
    if len(chain) <= 16:
        picture, missing = chain_graph(chain, names)
        key = chart_key([(f"background:{TOKEN_COLOURS[t % len(TOKEN_COLOURS)]}", f"reads {names[t]}")
                         for t in range(len(names))])
        caption = (f"Each arrow is a move at least {CHAIN_MIN_PROBABILITY:.0%} likely, as wide as its "
                   "probability, coloured by the token read, labelled with its probability"
                   + (f" ({missing} labels are left out where they would cover another; hover over an arrow for "
                      "its number)" if missing > 1 else " (1 label is left out where it would cover another; hover "
                      "over its arrow for its number)" if missing else "") + ". " + caption)
        return (intro + '<div class="figures one">'
                + figure("The Markov chain", picture, escape(caption), key, side=True) + "</div>")
    matrix = [probs for _, probs in chain]
    matrix_map = lambda font: heat_map(matrix, [state_name_(state) for state, _ in chain], names, VIRIDIS, 0, 1,
                                       "next token", "state (the last tokens read)", "probability",
                                       "transition matrix", font, keep=top)      # the states the caption names
    caption = (f"With {len(chain)} states a graph would be a tangle, so here is the chain's transition "
               "matrix: a row for each state, its cells the probability of each next token. " + caption)
    # A tall, narrow picture: on a slide, its caption goes beside it, and its text is drawn
    # larger (fewer row labels), so that a room can read it.
    return (intro + '<div class="figures one">'
            + figure("The transition matrix", matrix_map(FONT), escape(caption), big=matrix_map(PRESENT_FONT),
                     side=True) + "</div>")


def around(tokens, j, width=20):
    """Token j with up to `width` characters of text on each side, and an ellipsis where the
    text goes on: where a sample's surprise is, without quoting the whole sample."""
    before, after = "".join(tokens[:j]), "".join(tokens[j + 1:])
    return (("\u2026" + before[-width:] if len(before) > width else before) + tokens[j]
            + (after[:width] + "\u2026" if len(after) > width else after))


def samples_section(run, config, sample_probs, names_printed):
    """The final samples, each token on the colour of its probability, with a caption."""
    shown = run["samples"]
    pieces = [[run["chars"][t] for t in ids] for ids in run["sample_ids"]]      # the tokens drawn, as text
    unit = "token" if getattr(run["chars"], "merges", None) else "character"
    if names_printed:
        said = f"The final samples, as the run printed them (temperature {config.temperature})"
    else:
        said = (f"The run printed no samples (--num-samples 0); here are the first {len(shown)} it would have "
                f"printed (temperature {config.temperature})")
    notes = [said + f", each {unit} on the colour of the probability the model gave it (at temperature 1): "
             "dark for a surprise, yellow for a sure thing."]
    found = [(p, i, j) for i, probs in enumerate(sample_probs) for j, p in enumerate(probs) if p is not None]
    if not any(pieces):           # a barely trained model's samples can all be empty
        notes.append("Every sample ended at once: the first token the model drew was the end of a "
                     f"{'name' if run.get('names_data') else 'document'} (BOS), so there is nothing to shade.")
    if found:
        mean_log = sum(math.log(p) for p, _, _ in found) / len(found)
        p, i, j = min(found)
        notes.append(f"The model gave the {unit}s it wrote {percent(math.exp(mean_log))} on average (geometric "
                     f"mean); the biggest surprise is {pieces[i][j]!r} in {around(pieces[i], j)!r}, at {percent(p)}.")
    ticks = [(0, "0.01"), (0.25, "0.03"), (0.5, "0.1"), (0.75, "0.3"), (1, "1")]
    legend = svg(240, 66, colour_legend(8, 6, VIRIDIS, 0.01, 1, "probability (log scale)", 220, ticks),
                 "colour legend", grow=1.2)
    # Tokens of several characters (--bpe) are kept apart and whole, so that each shows where it ends.
    kept_apart = " tokens" * any(len(piece) > 1 for tokens in pieces for piece in tokens)
    samples = (f'<div class="samples{kept_apart}">' + "".join(f'<p class="sample">{shaded_text(tokens, probs)}</p>'
                                                             for tokens, probs in zip(pieces, sample_probs)) + "</div>")
    return ("<h2>Samples</h2>\n" + '<div class="figures one">'
            + figure("The final samples", samples + f'<div class="legend">{legend}</div>', escape(" ".join(notes)))
            + "</div>")


# In the presentation view a figure marked "side" (the Markov chain) puts its caption in a
# column beside the picture on a landscape screen: a square picture under a long caption
# would get half the screen's height. The legend goes above both, across the screen (a
# vocabulary of 16 tokens makes a long one), and the picture is a square as tall as what is
# left, but at most 60% of the screen's width, which leaves the caption room.
REPORT_CSS = """
body{font:17px/1.5 system-ui,-apple-system,"Segoe UI",Roboto,Helvetica,Arial,sans-serif;color:#1a1a1a;
background:#fff;max-width:1240px;margin:0 auto;padding:12px 20px 40px;overflow-wrap:break-word}
h1{font-size:28px;line-height:1.25;margin:8px 0 4px} h2{font-size:23px;margin:36px 0 10px;border-bottom:1px solid #bbb}
h3{font-size:18px;margin:8px 0 6px} p{max-width:52em}
svg{display:block;width:100%;height:auto;font-family:inherit}
.mono,pre,code,.sample,.tok{font-family:ui-monospace,"DejaVu Sans Mono",Menlo,Consolas,monospace}
table{border-collapse:collapse} td,th{padding:3px 14px 3px 0;text-align:left;vertical-align:baseline}
th{font-weight:600;color:#444} .scroll{overflow-x:auto}
.figures{display:grid;grid-template-columns:repeat(auto-fill,minmax(min(100%,360px),1fr));gap:18px 28px;
align-items:start} .figures.one{grid-template-columns:minmax(0,1fr)}
figure{margin:0;min-width:0} figure>svg{margin:0 auto}
figcaption{font-size:16px;color:#333;margin-top:8px;max-width:52em}
.note{color:#444;font-size:16px}
.key{list-style:none;padding:0;margin:6px 0;display:flex;flex-wrap:wrap;gap:4px 22px;font-size:16px}
.swatch{display:inline-block;width:26px;height:12px;margin-right:8px;vertical-align:middle;box-sizing:border-box}
.mark{color:#c00;margin-right:8px}
.sample{font-size:17px;white-space:pre-wrap;line-height:2;margin:4px 0}
.samples{display:flex;flex-wrap:wrap;gap:6px 22px}
.samples .sample{font-size:20px;letter-spacing:1px;min-width:0;overflow-wrap:anywhere;word-break:break-all}
.sample span{padding:2px 1px} .legend svg{max-width:300px;margin:0}
.samples.tokens .sample span{display:inline-block;margin-right:3px}
.label{paint-order:stroke;stroke:#fff;stroke-width:4px;font-weight:600}
.predictions td{white-space:nowrap;padding-right:16px}
.guess .tok{display:inline-block;min-width:1.2em;text-align:right;margin-right:6px}
.tok.true{color:#b35806;font-weight:700;text-decoration:underline}
.bar{display:inline-block;width:48px;height:13px;background:#e8e8e8;vertical-align:middle;margin-right:6px}
.fill{display:block;height:100%;min-width:2px;background:#4393c3} .fill.true{background:#e08214}
.p{display:inline-block;min-width:3.2em;font-size:15px}
.present{font-size:16px} .slidenav{display:none}
@media (max-width:700px){body{font-size:16px;padding:8px 10px 30px} h1{font-size:23px} h2{font-size:20px}
.predictions .g3,.predictions .g4{display:none} .bar{width:30px} td,th{padding-right:8px}
.predictions td{padding-right:8px}}
@media (max-width:1279px){.predictions .g4{display:none}} @media (max-width:1099px){.predictions .g3{display:none}}
@media (max-width:939px){.predictions .g2{display:none}} @media (max-width:619px){.predictions .g1{display:none}}
@media (min-width:701px) and (max-width:759px){.predictions .g1{display:none}}
.slide:target{position:fixed;inset:0;z-index:1;overflow:auto;background:#fff;margin:0;padding:8px 4vw;font-size:20px;
display:flex;flex-direction:column;box-sizing:border-box}
.slide:target h3{font-size:28px;margin:4px 0} .slide:target figcaption{font-size:20px;max-width:none}
.slide:target>*{flex:none}
.slide:target>svg,.slide:target>.big{flex:1 1 0;min-height:30vh;width:100%;max-width:none!important}
.slide:target>.big svg{height:100%;max-width:none!important}
.slide>.big,.slide:target>.big~svg{display:none} .slide:target>.big{display:block}
.slide:target .key{font-size:20px} .slide:target .predictions{font-size:24px}
.slide:target .predictions.long{font-size:20px;line-height:1.2} .slide:target .predictions.long td{padding:0 10px 0 0}
.slide:target .samples{flex:0 1 auto;min-height:0;overflow:auto}
.slide:target .samples .sample{font-size:30px} .slide:target .p{font-size:18px}
@media (max-width:1099px){.slide:target .predictions{font-size:21px} .slide:target .predictions td{padding-right:10px}
.slide:target .predictions .bar{width:34px}}
@media (max-width:999px){.slide:target .predictions .g2{display:none}}
@media (max-width:1439px){.slide:target .predictions .g3,.slide:target .predictions .g4,
.slide:target .predictions.wide .g2{display:none}} .slide:target .legend svg{max-width:none!important;width:400px}
.slide:target .slidenav{display:flex;gap:28px;font-size:20px}
.slide:target>.fit{flex:0 1 auto;min-height:0;overflow:auto} .slide:target .card td,.slide:target .card th{font-size:26px}
.slide:target .answers{display:flex;flex-wrap:wrap;align-items:center;gap:0 48px}
.slide:target .answers td{font-size:24px;line-height:1.25;padding:1px 24px 1px 0} .slide:target .answers .legend svg{width:320px}
@media (min-aspect-ratio:1/1){.slide.side:target{display:grid;column-gap:28px;
grid-template:auto auto auto minmax(0,1fr)/auto minmax(0,1fr)}
.slide.side:target>nav,.slide.side:target>h3,.slide.side:target>.key{grid-column:1/-1}
.slide.side:target>svg{grid-area:4/1;height:100%;width:auto;aspect-ratio:1;max-width:60vw!important}
.slide.side:target>.big{grid-area:4/1;min-height:0;width:auto;max-width:60vw!important}
.slide.side:target>.big svg{height:100%;width:auto}
.slide.side:target>figcaption{grid-area:4/2;margin-top:0}
.slide.keyside:target{display:grid;column-gap:24px;grid-template:auto auto minmax(30vh,1fr) auto/minmax(0,1fr) auto}
.slide.keyside:target>nav,.slide.keyside:target>h3,.slide.keyside:target>figcaption{grid-column:1/-1}
.slide.keyside:target>.big{grid-area:3/1;min-height:0} .slide.keyside:target>.key{grid-area:3/2;align-self:center;
flex-direction:column;max-width:30vw;gap:8px;font-size:18px;line-height:1.35}}
@media print{body{max-width:none;padding:0;font-size:11pt} h2,h3{break-after:avoid} .keep{break-inside:avoid}
.present,.slidenav{display:none}
figure,table,.sample{break-inside:avoid} .figures{grid-template-columns:repeat(2,minmax(0,1fr))}
.figures.one{grid-template-columns:minmax(0,1fr)} figure{margin:0 0 14pt} figure>svg{max-width:16cm}
*{-webkit-print-color-adjust:exact;print-color-adjust:exact}}
"""


def validation_fact(run, what):
    """The run table's validation loss: the one the run printed at its end, on all its held-out
    sequences (a loaded model's checkpoint keeps it), or, if a checkpoint from an older microgpt
    does not, the chart's last point, with the few held-out sequences it is measured on."""
    if run["val_loss"] is not None and run.get("val_count"):
        loaded = " (as the run that saved the model printed it)" if run["config"].steps == 0 else ""
        return f"validation {run['val_loss']:.4f} on {plural(run['val_count'], 'held-out ' + what)}{loaded}; "
    if run["val_points"]:
        step, loss = run["val_points"][-1]
        on = f" on {plural(run['val_subset'], 'held-out ' + what)}" if run["val_subset"] else ""
        return (f"validation not kept by the checkpoint: {loss:.4f}{on} at step {step:,} (the chart's last "
                "point); ")
    return "no validation loss; "


def sequence_word(run):
    """What the page calls one of the run's training sequences: "window" in stream mode,
    "name" when the run trained on the shipped names.txt (write_report sets names_data), else
    "document", the word the terminal uses: the page cannot tell what your own lines are."""
    if run["mode"] != "docs":
        return "window"
    return "name" if run.get("names_data") else "document"


def report_page(run):
    """The whole page, as one string of HTML. run is a dict of what the run knows: the model
    (config, mode, chars, weights, n_params), the training record (losses: every step's;
    val_points: [(step, loss)]; snapshots: [{"step", "samples"}]; val_subset: how many held-out
    sequences those losses are over; val_loss: the final one, or None), descriptions in words
    (data_name, data, training, batch, interpreter), the training documents if there are
    any (text), and what to show: examples, [(inputs, targets)] to look inside, and samples,
    the final samples."""
    config, chars, weights, mode = run["config"], run["chars"], run["weights"], run["mode"]
    vocab_size = len(chars) + (1 if mode == "docs" else 0)
    names = [label(t, chars) for t in range(vocab_size)]
    data = report_data(run)
    losses, uniform = run["losses"], math.log(vocab_size)
    data_docs = split_documents(run["text"]) if mode == "docs" and run.get("text") else []
    what = sequence_word(run)
    out = [f'<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n{REPORT_MARK}\n'
           '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
           f'<title>microgpt: {escape(run["data_name"])}</title>\n<style>{REPORT_CSS}</style>\n</head>\n<body>\n'
           f'<h1 id="top">What microgpt learned from {escape(run["data_name"])}</h1>'
           '<p class="present"><a href="#fig-1">Present: one picture per screen</a> (large type, for a projector; '
           '"next" goes on, "close" comes back here)</p>']

    # 1. The run
    tail = losses[-100:]
    facts = [("data", run["data"]),
             ("model", f"{run['n_params']:,} parameters; vocabulary of {vocab_size:,} tokens: "
                       + " ".join(names[:REPORT_MAX_ROWS]) + (" ..." if vocab_size > REPORT_MAX_ROWS else "")),
             ("shape", ", ".join(f"{key} {getattr(config, key)}" for key in MODEL_SHAPE)),
             ("training", run["training"]),
             ("interpreter", run["interpreter"]),
             ("loss", (f"training (the last step, on all the data: nothing to smooth) {tail[-1]:.4f}; "
                       if tail and run["batch"].startswith("all ") else
                       f"smoothed (mean of the last {len(tail)} steps) {sum(tail) / len(tail):.4f}; "
                       if len(tail) > 1 else f"training (one step) {tail[0]:.4f}; " if tail else "")
              + validation_fact(run, what)
              + f"uniform guessing ln {vocab_size} = {uniform:.4f}")]
    out.append("<h2>The run</h2>\n<table>" + "".join(f"<tr><th>{k}</th><td>{escape(v)}</td></tr>"
                                                    for k, v in facts) + "</table>")
    out.append(loss_section(run, vocab_size, what))                                  # 2. The loss curve
    if run["snapshots"]:
        out.append(snapshots_section(run, mode, config, data_docs))                   # 3. As it learns
    said = caption_names(names, chars)
    out.append(embeddings_section(weights, config, names, chars, mode, data_docs,
                                  run.get("steps_before", 0) + config.steps, what, said))   # 4. Embeddings

    # 5. Inside one name (or document, or window)
    heading = (f"<h2>Inside one {what}</h2>\n<p class=\"note\">For each position: the token the model reads, "
               "the true next token with the probability the model gave it and its loss (-ln of that "
               "probability), and the model's likeliest guesses. Then, for each attention head, where each "
               "position looks: a row is a position reading, its cells the positions it attends to, itself "
               "included (later ones are blank: it cannot see them).</p>")
    if not data["examples"]:     # a barely trained loaded model's samples can all be empty
        out.append(f"<h2>Inside one {what}</h2>\n<p class=\"note\">Nothing to look inside: this run has no "
                   f"held-out {what}s, and the samples it drew all ended at once (empty). "
                   f"<code>--explain TEXT</code> looks inside any text you give.</p>")
    for i, example in enumerate(data["examples"]):
        out.append(inside_section(example, names, what, config.n_head, heading if i == 0 else "", said))
    if run["samples"]:
        out.append(samples_section(run, config, data["sample_probs"], config.num_samples > 0))   # 6. Samples
    if mode == "stream" and vocab_size ** config.block_size <= 256:
        out.append(chain_section(weights, config, names))                          # 7. The Markov chain

    # The numbers, for reuse. "<", ">" and "&" are escaped so the JSON cannot end the script element.
    if vocab_size > REPORT_MAX_ROWS:     # each position's 32 likeliest tokens only, as [[id, probability]]
        for example in data["examples"]:
            example["probs"] = [sorted(enumerate(p), key=lambda tp: -tp[1])[:32] for p in example["probs"]]
    blob = json.dumps(data).replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")
    out.append(f'<script type="application/json" id="microgpt-data">{blob}</script>\n</body>\n</html>\n')
    return number_figures("\n".join(out))


def card_answer_ids(answer, chat_chars):
    """An answer kept on the card (its tokens' texts, joined) back to token ids, taking the
    longest token that matches at each point; ValueError if some part matches none."""
    tokens = sorted(chat_chars, key=len, reverse=True)
    ids, i = [], 0
    while i < len(answer):
        match = next((t for t in tokens if answer.startswith(t, i)), None)
        if match is None:
            raise ValueError(f"{answer!r} is not made of the model's tokens")
        ids.append(chat_chars.index(match))
        i += len(match)
    return ids


def chat_report_page(card, plan, config, chat_chars, weights):
    """--report with --chat: the report card, each stage's curve (a figure each, for the
    presentation view), and the card's answers to a few held-out requests, the ones the
    terminal prints under the card, each token shaded by its probability."""
    kinds = list(TASKS)
    rows = "".join(
        f"<tr><td>{escape(row['stage'])}</td><td>{row.get('steps', 0):,}</td>"
        f"<td>{'-' if row.get('loss') is None else format(row['loss'], '.4f')}</td>"
        + "".join(f"<td>{row['pass_rates'].get(k, 0):.1%}</td>" for k in kinds)
        + f"<td>{escape(row['what'])}</td></tr>" for row in card)
    out = [f'<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n{REPORT_MARK}\n'
           '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
           f'<title>microgpt: the assistant</title>\n<style>{REPORT_CSS}</style>\n</head>\n<body>\n'
           '<h1 id="top">From names to an assistant: the report card</h1>'
           '<p class="present"><a href="#fig-1">Present: one picture per screen</a> (large type, for a projector; '
           '"next" goes on, "close" comes back here)</p>',
           '<div class="figures one">']
    # The card is a slide too (the first): the story of the run, 0% -> SFT -> RL, in large type.
    story = "; ".join(f'"{k} X" ' + " &rarr; ".join(f"{row['pass_rates'].get(k, 0):.1%} ({escape(row['stage'])})"
                                                     for row in card) for k in kinds)
    out.append(figure("The report card: pass rate on held-out requests", '<div class="scroll fit"><table class="card">'
                      '<tr><th>stage</th><th>steps</th><th>loss</th>'
                      + "".join(f"<th>pass rate: {escape(k)} X</th>" for k in kinds)
                      + f"<th>the loss is</th></tr>{rows}</table></div>",
                      f"Pass rate: the share of {plan.eval_requests} held-out requests of each kind (never "
                      f"fine-tuned on) answered correctly, sampled at temperature {config.temperature}: {story}. "
                      f'Model: {", ".join(f"{k} {getattr(config, k)}" for k in MODEL_SHAPE)}; seed {config.seed}.'))
    out.append("</div>\n<h2>Each stage's curve</h2><div class=\"figures one\">")
    labels = {"pretrained": ("loss (smoothed over 100 steps)", "#2166ac",
                             "The names model's training loss (at each step, the mean of the last 100 steps)"),
              "SFT": ("answer loss", "#e08214", f"Each step's mean loss on the answers' tokens only (the mask of "
                                                f"V.2) of its {plan.sft_batch} conversations"),
              "RL": ("mean reward of the step's answers", "#1f9e89", f"Each step's mean reward: the share of its "
                     f"{plan.rl_requests} x {plan.rl_group} answers that were correct")}
    for row in card:
        curve = row.get("curve") or []
        if curve:
            what, colour, meaning = labels[row["stage"]]
            lo, hi = min(curve), max(curve)
            n = len(curve)
            points = [(i + 1, y) for i, y in enumerate(curve)][::max(1, n // 1000)]
            ticks = [(t, f"{t:g}") for t in nice_ticks(0, n, 6) if t == int(t)]
            chart, big = (line_chart([(points, colour, 2, 1, n < 60)], lambda s: s / n, ticks,
                                     (lo - 0.05 * (hi - lo or 1), hi + 0.05 * (hi - lo or 1)), "step", what,
                                     f"{row['stage']}: {what}", font=font) for font in (FONT + 2, PRESENT_FONT - 2))
            caption = (f"{meaning}, over {n:,} step{'s' * (n > 1)}: {curve[0]:.4g} at the first, "
                       f"{curve[-1]:.4g} at the last.")
            out.append(figure(row["stage"], chart, escape(caption),
                              chart_key([(f"border-top:3px solid {colour}", what)]), big))
    # The answers, a slide too (the last), with the note on reward hacking as its caption.
    out.append("</div>\n<h2>Answers, shaded by probability</h2>\n<div class=\"figures one\">")
    ticks = [(0, "0.01"), (0.25, "0.03"), (0.5, "0.1"), (0.75, "0.3"), (1, "1")]
    legend = svg(240, 66, colour_legend(8, 6, VIRIDIS, 0.01, 1, "probability (log scale)", 220, ticks),
                 "colour legend", grow=1.2)
    answers = []
    for request, answer, correct in card[-1]["answers"]:
        ids = card_answer_ids(answer, chat_chars)
        prompt = prompt_for(encode_text(request, chat_chars), chat_chars)
        shaded = (shaded_text([chat_chars[t] for t in ids], answer_probabilities(weights, config, prompt, ids))
                  if ids else "<i>(nothing)</i>")
        answers.append(f'<tr><td class="mono">{escape(request)}</td><td class="sample">{shaded}</td>'
                       f'<td>{"right" if correct else "wrong"}</td></tr>')
    caption = (f"Answers to held-out requests, the ones the terminal prints under the card (drawn in the "
               f"{card[-1]['stage']} stage's evaluation, at temperature {config.temperature}), each token on the "
               "colour of the probability the model gave it; hovering shows it. Asked again, the assistant may "
               "answer otherwise.")
    if card[-1]["stage"] == "RL":
        caption += f" {REWARD_HACKING}."
    out.append(figure(f"The {card[-1]['stage']} assistant's answers", '<div class="fit answers"><div class="scroll">'
                      '<table>' + "".join(answers) + f'</table></div><div class="legend">{legend}</div></div>',
                      escape(caption)) + "</div>")
    for row in card[:-1]:                    # the last stage's answers are the table above
        out.append(f"<h3>{escape(row['stage'])}: answers during its evaluation</h3>"
                   '<div class="scroll"><table>' + "".join(
                       f'<tr><td class="mono">{escape(q)}</td><td class="mono">{escape(a or "(nothing)")}</td>'
                       f'<td>{"right" if ok else "wrong"}</td></tr>' for q, a, ok in row["answers"]) + "</table></div>")
    blob = json.dumps(card).replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")
    out.append(f'<script type="application/json" id="microgpt-data">{blob}</script>\n</body>\n</html>\n')
    return number_figures("\n".join(out))


def is_microgpt_report(path):
    """True if the file at path is a page written by --report (it carries our mark near its
    top), so that a new report may replace it. Any other file is not ours to overwrite."""
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            return REPORT_MARK in f.read(4096)
    except OSError:
        return False


def gpt2_prediction_table(tokens, rows, labels):
    """Per position: the token read, the probability GPT-2 gave the token that came next,
    and its five likeliest guesses, each on the colour of its probability (as the samples
    of the names' page are shaded). A table rather than prediction_bars(), whose columns
    are cut for single characters: GPT-2's tokens are whole words."""
    def cell(t, p, true=False):
        colour = probability_shade(p)
        return (f'<td class="mono" style="background:{colour};color:{ink_on(colour)};white-space:nowrap">'
                f'{"<b>" * true}{escape(labels[t])} {p:.3f}{"</b>" * true}</td>')
    ticks = [(0, "0.01"), (0.25, "0.03"), (0.5, "0.1"), (0.75, "0.3"), (1, "1")]
    out = ['<p class="note">At each position: the probability GPT-2 gave the token that came next, and its '
           'five likeliest guesses, each on the colour of its probability (a log scale: dark for a surprise).</p>',
           svg(200, 42, colour_legend(4, 16, VIRIDIS, 0.01, 1, "probability (log scale)", 180, ticks), "colour legend", 1),
           '<table><tr><th>pos</th><th>reads</th><th>the true next token</th>'
           '<th colspan="5">the five likeliest guesses</th></tr>']
    for pos, (probs, _) in enumerate(rows):
        top = sorted(range(len(probs)), key=probs.__getitem__, reverse=True)[:5]
        nxt = cell(tokens[pos + 1], probs[tokens[pos + 1]], True) if pos + 1 < len(tokens) else "<td></td>"
        out.append(f'<tr><td>{pos}</td><td class="mono">{escape(labels[tokens[pos]])}</td>{nxt}'
                   + "".join(cell(t, probs[t]) for t in top) + "</tr>")
    return "\n".join(out) + "</table>"


def gpt2_report_page(model, config, n_params, tokens, rows, tok):
    """--report for GPT-2: a page with what it predicts at each position of a text and where
    each of its attention heads looks (no loss curve: it was not trained here)."""
    labels = {t: gpt2_token_label(tok, t) for probs, _ in rows
              for t in [*tokens, *sorted(range(len(probs)), key=probs.__getitem__, reverse=True)[:5]]}
    text = tok.decode_bytes(tokens).decode("utf-8", errors="replace")
    out = [f'<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n{REPORT_MARK}\n'
           '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
           f'<title>microgpt: GPT-2 {escape(model)}</title>\n<style>{REPORT_CSS}</style>\n</head>\n<body>\n'
           f'<h1>Inside GPT-2 ({escape(model)})</h1>',
           f'<p>{n_params:,} parameters, {config.n_layer} layers of {config.n_head} heads, n_embd '
           f'{config.n_embd}. The text, {len(tokens)} tokens: <span class="mono">{escape(text)}</span></p>',
           "<h2>Predictions</h2>", gpt2_prediction_table(tokens, rows, labels),
           '<h2>Attention</h2>\n<p class="note">For each layer and head: a row is a position reading, its '
           'cells the positions it attends to, itself included (later ones are blank: it cannot see them).</p>']
    names = [f"{p} {labels[t]}" for p, t in enumerate(tokens)]
    for i in range(config.n_layer):
        out.append(f'<h3>layer {i}</h3><div class="figures">')
        for h in range(config.n_head):
            matrix = [log[i * config.n_head + h] + [None] * (len(tokens) - pos - 1) for pos, (_, log) in enumerate(rows)]
            out.append(heat_map(matrix, names, [labels[t] for t in tokens], VIRIDIS, 0, 1, "looks at",
                                "position reading", "attention weight", f"layer {i} head {h}"))
        out.append("</div>")
    return "\n".join(out) + "\n</body>\n</html>\n"


# ---------------------------------------------------------------------------------------
# Chat in the browser: --serve
#
# `python microgpt.py --load chat.json --serve` puts the assistant of Part V in a web page:
# a chat box whose answers arrive token by token, each token shaded by the probability the
# model gave it, with the model's other candidates shown on hover. It is served by the
# standard library's http.server, one thread per connection, with one page (everything
# inline: nothing is fetched from elsewhere and no file is read from disk) and a small JSON
# API behind it (see README, "Chat in the browser"):
#
#   GET  /           the page
#   GET  /api/info   the model's size and the server's limits, as JSON
#   POST /api/chat   {"request": "a name starting with m"} -> one JSON object per line:
#                    {"token": "m", "p": 0.93, "alternatives": [["m", 0.93], ...]} per token,
#                    then {"done": true, "answer": "mia", "tokens": 3, "seed": 7}
#
# The answer is streamed as newline-delimited JSON over a plain HTTP/1.0 response that ends
# when the connection closes: the browser's fetch() reads it as it comes, so does curl, and
# http.server needs no chunked encoding for it. The final "done" line tells a complete
# answer from one cut off by a broken connection.
#
# A server on 127.0.0.1 is still reachable by every web page the user opens, so it is
# careful by default. It answers only requests addressed to localhost or 127.0.0.1 by their
# Host header (listening for other machines, also to an IP address or this machine's own
# name: see own_names): a hostile page can make its own domain name resolve to 127.0.0.1
# ("DNS rebinding"), but its requests still carry its own name. It takes only JSON (which a page
# from elsewhere cannot send without the browser first asking us, and we never say yes),
# caps the size of a request, the length of an answer and the number of answers computed
# at once, answers every mistake with a 4xx status and one line of JSON, and stops
# generating as soon as the reader of an answer goes away.
# ---------------------------------------------------------------------------------------

import http.server
import ipaddress
import socket
import socketserver
import threading
import urllib.parse

MAX_BODY_BYTES = 4096           # a request is one sentence: a bigger body is refused (413)
MAX_REQUEST_CHARS = 200         # the longest request text
MAX_ANSWER_TOKENS = 64          # an answer stops here if the model has not ended it before
MAX_GENERATIONS = 2             # answers computed at once (2 cores); more wait their turn (503)
IDLE_SECONDS = 30               # a connection that sends or reads nothing for this long is dropped
LOOPBACK_NAMES = ("localhost", "127.0.0.1", "::1")
# How many connections the system holds while the server's thread has not yet accepted them.
# socketserver's default, 5, is smaller than a class pressing Enter at once: about 20
# requests together already had some connections reset before the server saw them.
# Accepted, a request beyond MAX_GENERATIONS gets 503 with Retry-After, and the page retries.
LISTEN_BACKLOG = 64


def api_probability(p):
    """A probability as the API sends it: 6 decimals are plenty to look at, but where they
    would round it to 0, 2 significant digits. At a high temperature the model can draw a
    token it gave 3e-8, and "p": 0.0 would say it could not have been drawn."""
    rounded = round(p, 6)
    return rounded if rounded or not p else float(f"{p:.2g}")


def port_arg(text):
    try:
        value = int(ascii_arg(text))
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a port number, not {text[:20]!r}") from None
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"must be from 0 to 65535 (0: any free port), not {value}")
    return value


def is_loopback(host):
    """Whether an address (or the name localhost) reaches this machine only."""
    try:
        return host.lower() == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def is_wildcard(host):
    return host in ("0.0.0.0", "::", "")


def lan_addresses():
    """This machine's IPv4 addresses that others on its network may use, found without
    sending a packet: the ones its own name resolves to (the hosts file, or the local
    network's resolver), and the one the system would send from towards a private address
    (connecting a UDP socket only chooses a route; nothing is sent)."""
    found = []
    try:
        found += [info[4][0] for info in socket.getaddrinfo(socket.gethostname(), None, socket.AF_INET)]
    except OSError:
        pass
    for private in ("10.254.254.254", "172.31.254.254", "192.168.254.254"):
        try:
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
                s.connect((private, 9))
                found.append(s.getsockname()[0])
        except OSError:                   # no route there: no network, or not this kind
            pass
    addresses = {ipaddress.ip_address(a) for a in found}
    return [str(a) for a in sorted(addresses) if not (a.is_loopback or a.is_unspecified or a.is_link_local)]


def own_names(bound_host):
    """The names, besides IP addresses, that a server listening on bound_host answers to.
    Bound to a loopback address: localhost only. Bound to an address others can reach: also
    this machine's name and that name + ".local", which students may type. That is safe
    against DNS rebinding, because what that name points to is decided by this machine and
    its local network (hosts file, local DNS, mDNS), never by a site on the internet, and
    whoever controls the local network can reach the server directly anyway."""
    if is_loopback(bound_host):
        return ["localhost"]
    name = socket.gethostname().lower().rstrip(".")      # the kernel's name: no lookup
    short = name[:-len(".local")] if name.endswith(".local") else name
    return list(dict.fromkeys(["localhost"] + ([short, short + ".local"] if short else [])))


def host_allowed(header, bound_host, port, names=("localhost",)):
    """Whether a request's Host header (or the host of its Origin) names this server: one of
    the loopback addresses or our own names (own_names) with our port, or the address we
    were explicitly told to listen on. Listening on every address (0.0.0.0), any IP address
    is accepted: an address is not a name, and DNS rebinding needs a name."""
    try:
        parts = urllib.parse.urlsplit("//" + header)
        name, given_port = parts.hostname, parts.port
    except ValueError:                         # a port that is not a number, a broken [address]
        return False
    if not name or (given_port or 80) != port or parts.username is not None or parts.path:
        return False
    if name in LOOPBACK_NAMES or name in names or name == bound_host.lower():
        return True
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return False
    return is_wildcard(bound_host)


def accepted_hosts(bound_host, port, names):
    """What host_allowed accepts, in words, for the 403 that refuses the rest (a loopback
    name on a server that listens elsewhere is accepted too, but never arrives)."""
    hosts = [f"{h}:{port}" for h in names]
    if is_wildcard(bound_host):
        return ", ".join(hosts) + f" or any IP address with :{port}"
    if is_loopback(bound_host) and bound_host not in ("127.0.0.1", "localhost"):
        hosts.append(f"127.0.0.1:{port}")
    hosts.append((f"[{bound_host}]" if ":" in bound_host else "127.0.0.1" if bound_host == "localhost"
                  else bound_host) + f":{port}")
    return ", ".join(hosts[:-1]) + " or " + hosts[-1]


class ChatServer(http.server.ThreadingHTTPServer):
    """The web chat: a threaded HTTP server holding the page, a function that streams the
    model's answer, and the limits. reply(request, rng, temperature) yields (piece,
    probability, alternatives) per token, as chat_reply does (Part V)."""
    daemon_threads = True        # an answer still being written never keeps the program from exiting
    block_on_close = False
    request_queue_size = LISTEN_BACKLOG       # socketserver passes it to listen()

    def __init__(self, host, port, reply, info, temperature, seed, generations=MAX_GENERATIONS):
        self.address_family = socket.AF_INET6 if ":" in host else socket.AF_INET
        super().__init__((host, port), ChatHandler)
        self.host, self.port = host, self.server_address[1]     # port 0 asks for any free port
        self.names = own_names(host)
        self.reply, self.temperature = reply, temperature
        self.info = dict(info, limits={"body_bytes": MAX_BODY_BYTES, "request_chars": MAX_REQUEST_CHARS,
                                       "answer_tokens": MAX_ANSWER_TOKENS, "generations_at_once": generations})
        self.page = chat_page().encode("utf-8")
        self.slots = threading.BoundedSemaphore(generations)
        self.seeds = random.Random(seed)       # each answer's seed: the same sequence at every start
        self.lock = threading.Lock()
        self.abandoned = 0                     # answers stopped because their reader went away

    def server_bind(self):
        # HTTPServer's own looks up the machine's domain name, which can hang without DNS.
        socketserver.TCPServer.server_bind(self)
        self.server_name, self.server_port = self.server_address[:2]

    def next_seed(self):
        with self.lock:
            return self.seeds.randrange(2**31)

    def handle_error(self, request, client_address):
        """An exception escaped a request: one line on stderr, never a traceback; a client
        that went away is not worth a line."""
        error = sys.exc_info()[1]
        if not isinstance(error, OSError):
            print(f"microgpt: error while answering {client_address[0]}: {type(error).__name__}: {error}",
                  file=sys.stderr, flush=True)


class ChatHandler(http.server.BaseHTTPRequestHandler):
    """One request: check where it comes from and what it asks, then answer it."""
    default_request_version = "HTTP/1.0"     # so that even a garbled request gets a status line
    timeout = IDLE_SECONDS           # a slow or silent client is dropped rather than holding a thread

    def version_string(self):        # the Server header: no Python version to fingerprint
        return "microgpt"

    def do_GET(self):
        if not self.addressed_to_us():
            return
        if self.path == "/":
            self.send_bytes(200, "text/html; charset=utf-8", self.server.page)
        elif self.path == "/api/info":
            self.send_json(200, self.server.info)
        elif self.path == "/api/chat":
            self.wrong_method()
        else:
            self.send_json(404, {"error": f"no such page: {self.path[:100]} (the chat is at /)"})

    def do_POST(self):
        body = self.read_body()
        if body is None or not self.addressed_to_us():
            return
        if self.path in ("/", "/api/info"):
            return self.wrong_method()
        if self.path != "/api/chat":
            return self.send_json(404, {"error": f"no such page: {self.path[:100]} (the API is POST /api/chat)"})
        asked = self.read_chat_request(body)
        if asked is not None:
            self.stream_answer(*asked)

    def __getattr__(self, name):     # PUT, DELETE, HEAD, or any other method: 405, not 501
        if name.startswith("do_"):
            return self.wrong_method
        raise AttributeError(name)

    def wrong_method(self):
        allowed = "POST" if self.path == "/api/chat" else "GET"
        self.send_json(405, {"error": f"{self.command} is not allowed here; use {allowed}"}, {"Allow": allowed})

    def addressed_to_us(self):
        """Refuse (403) a request whose Host, or whose Origin for a page's request, is not
        one of our own names: see DNS rebinding above."""
        server = self.server
        host, origin = self.headers.get("Host", ""), self.headers.get("Origin")
        if len(self.headers.get_all("Host", [])) > 1:     # which one would a proxy have routed by?
            self.send_json(400, {"error": "send one Host header, not several"})
            return False
        if not host_allowed(host, server.host, server.port, server.names):
            self.send_json(403, {"error": f"this server answers only to Host: "
                                          f"{accepted_hosts(server.host, server.port, server.names)}; "
                                          f"not {host[:100]!r}"})
            return False
        if origin is not None and not (origin.startswith("http://") and host_allowed(
                origin[len("http://"):], server.host, server.port, server.names)):
            self.send_json(403, {"error": f"requests from pages at {origin[:100]!r} are not accepted"})
            return False
        return True

    def read_body(self):
        """A POST's body, at most MAX_BODY_BYTES, or None after refusing it. It is read
        before anything else is checked: a refusal that left it unread would make the
        system reset the connection, and the client might never see why."""
        length = self.headers.get("Content-Length")
        if length is None or "Transfer-Encoding" in self.headers:
            return self.send_json(411, {"error": "send the JSON body with a Content-Length"})
        if not (length.isascii() and length.isdigit()):
            return self.send_json(400, {"error": "Content-Length is not a number"})
        if len(length) > 9 or int(length) > MAX_BODY_BYTES:
            self.send_json(413, {"error": f"the body is {length[:20]} bytes; at most {MAX_BODY_BYTES}"})
            # Read (for a second at most) what is already on its way, for the reason above.
            self.connection.settimeout(1)
            try:
                self.rfile.read(min(int(length[:9]), 16 * MAX_BODY_BYTES))
            except OSError:
                pass
            return None
        return self.rfile.read(int(length))

    def read_chat_request(self, body):
        """The request's text, temperature and seed, or None after refusing it."""
        if self.headers.get_content_type() != "application/json":
            return self.send_json(415, {"error": "send JSON, with Content-Type: application/json"})
        try:
            body = json.loads(body.decode("utf-8"))
        except (UnicodeDecodeError, ValueError, RecursionError):
            return self.send_json(400, {"error": 'the body is not JSON; send {"request": "a name starting with m"}'})
        if not isinstance(body, dict) or not isinstance(body.get("request"), str):
            return self.send_json(400, {"error": 'send a JSON object with a "request" string, '
                                                 'such as {"request": "a name starting with m"}'})
        unknown = sorted(set(body) - {"request", "temperature", "seed"})
        if unknown:
            return self.send_json(400, {"error": f"unknown fields {unknown}; known: request, temperature, seed"})
        # White space around the request is dropped, as the page and the terminal drop it.
        request, temperature = body["request"].strip(), body.get("temperature", self.server.temperature)
        seed = body.get("seed", None)
        if not request or len(request) > MAX_REQUEST_CHARS:
            return self.send_json(400, {"error": f"the request must have 1 to {MAX_REQUEST_CHARS} characters, "
                                                 f"not {len(request)}"})
        if type(temperature) not in (int, float) or not 0 <= temperature <= 10:
            return self.send_json(400, {"error": "temperature must be a number from 0 (always the likeliest "
                                                 "token) to 10"})
        if seed is None:
            seed = self.server.next_seed()
        elif type(seed) is not int or not 0 <= seed < 2**63:
            return self.send_json(400, {"error": "seed must be a whole number from 0 to 2**63 - 1"})
        return request, float(temperature), seed

    def stream_answer(self, request, temperature, seed):
        """Generate the answer one token at a time and send each as soon as it exists. If the
        reader goes away, the next write fails and generation stops there."""
        server = self.server
        if not server.slots.acquire(blocking=False):
            return self.send_json(503, {"error": "busy: the model is writing other answers; try again in a "
                                                 "moment"}, {"Retry-After": "1"})
        answer = None
        try:
            try:
                answer = server.reply(request, random.Random(seed), temperature)
                token = next(answer, None)        # the model reads the request: it may refuse it
            except BadInput as e:
                return self.send_json(400, {"error": str(e)})
            self.send_response(200)
            self.send_header("Content-Type", "application/x-ndjson; charset=utf-8")
            self.send_common_headers()
            self.end_headers()
            pieces = []
            try:
                while token is not None and len(pieces) < MAX_ANSWER_TOKENS:
                    piece, p, alternatives = token
                    pieces.append(piece)
                    line = {"token": piece, "p": api_probability(p),
                            "alternatives": [[t, api_probability(q)] for t, q in alternatives]}
                    if piece in SPECIAL:                      # <|pad|>: a token, not text (Part V.2)
                        line["special"] = True
                    self.send_line(line)
                    token = next(answer, None)
                self.send_line({"done": True, "answer": "".join(pieces), "tokens": len(pieces), "seed": seed})
            except OSError:                   # the reader went away (or stopped reading for IDLE_SECONDS)
                with server.lock:
                    server.abandoned += 1
                self.close_connection = True
        finally:
            if answer is not None:
                answer.close()                # a generator cut short stops here, mid-answer
            server.slots.release()

    def send_line(self, obj):
        self.wfile.write(json.dumps(obj, ensure_ascii=False).encode("utf-8") + b"\n")

    def send_common_headers(self):
        # The page may run only its own inline script and style and talk only to us; no
        # other site may frame it, and no cache keeps an answer.
        self.send_header("Content-Security-Policy", "default-src 'none'; script-src 'unsafe-inline'; "
                         "style-src 'unsafe-inline'; connect-src 'self'; img-src data:; frame-ancestors 'none'")
        self.send_header("X-Content-Type-Options", "nosniff")
        self.send_header("Cache-Control", "no-store")
        self.send_header("Referrer-Policy", "no-referrer")

    def send_bytes(self, status, content_type, data, headers=None):
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.send_common_headers()
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    def send_json(self, status, obj, headers=None):
        """Send obj as JSON. Returns None, so that `return self.send_json(...)` refuses."""
        self.send_bytes(status, "application/json; charset=utf-8",
                        json.dumps(obj, ensure_ascii=False).encode("utf-8") + b"\n", headers)

    def send_error(self, code, message=None, explain=None):
        # http.server's own refusals (a malformed request line, headers too long) as JSON too.
        self.close_connection = True
        try:
            self.send_json(code, {"error": message or self.responses.get(code, ("error",))[0]})
        except OSError:
            pass

    def log_message(self, format, *args):     # quiet: a request is not news
        pass


def chat_page():
    """The one page the server serves: HTML, CSS and JavaScript, all inline."""
    return CHAT_PAGE.replace("/*PALETTE*/", json.dumps(VIRIDIS))


CHAT_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="generator" content="microgpt">
<link rel="icon" href="data:,">
<title>microgpt chat</title>
<style>
body { font: 16px/1.5 system-ui, sans-serif; max-width: 42em; margin: 1.5em auto; padding: 0 1em; color: #222; }
h1 { font-size: 1.4em; margin: 0 0 .3em; }
.hint { color: #555; margin: 0 0 1em; font-size: .95em; }
code { background: #f3f3f3; padding: 0 .25em; border-radius: 3px; }
#log { border: 1px solid #ccc; border-radius: 6px; padding: .4em 1em; min-height: 8em; }
#log:empty::before { content: "Ask for a name below."; color: #999; }
.turn { margin: .5em 0; overflow-wrap: anywhere; }   /* a long word wraps instead of widening the page */
.who { font-weight: 600; display: inline-block; width: 5.5em; }
.tok { font: 1.1em ui-monospace, Menlo, Consolas, monospace; padding: 1px 1px; border-radius: 2px; }
.tok.special { font-size: .8em; font-style: italic; outline: 1px dashed #888; margin: 0 2px; }
.error { color: #b00020; }
.note { color: #777; }
form { display: flex; gap: .5em; margin-top: .8em; }
input { flex: 1; font: inherit; padding: .35em .5em; }
button { font: inherit; padding: .35em 1em; }
#tip { position: absolute; display: none; background: #fff; border: 1px solid #888; border-radius: 4px;
       padding: .3em .6em; box-shadow: 0 2px 8px rgba(0,0,0,.25); font: 13px/1.45 ui-monospace, monospace;
       white-space: pre; pointer-events: none; }
.legend { font-size: .85em; color: #555; margin-top: .6em; }
.legend span { display: inline-block; padding: 0 .4em; }
</style></head>
<body>
<h1>microgpt chat</h1>
<p class="hint">The assistant understands two requests, <code>a name starting with X</code> and
<code>a name ending with X</code>, X being 1 to 3 letters: for example
<code>a name starting with m</code> or <code>a name ending with ia</code>. Anything else gets a
note saying so. Each letter of an answer is shaded by the probability the model gave it; point
at one to see what else the model considered.</p>
<div id="log" aria-live="polite"></div>
<form id="ask"><input id="request" maxlength="200" autocomplete="off" autocapitalize="off" autocorrect="off"
 spellcheck="false" required autofocus
 placeholder="a name starting with m" aria-label="your request"><button id="send">Send</button></form>
<div class="legend" id="legend">probability: </div>
<div id="tip" role="tooltip"></div>
<script>
"use strict";
const PALETTE = /*PALETTE*/;
// The colour for a probability, on a log scale from 0.01 (dark) to 1 (yellow), as in --report.
function shade(p) {
  let t = (Math.log10(Math.max(p, 0.01)) + 2) / 2 * (PALETTE.length - 1);
  t = Math.min(PALETTE.length - 1, Math.max(0, t));
  const i = Math.min(Math.floor(t), PALETTE.length - 2), f = t - i;
  const mix = k => Math.round(parseInt(PALETTE[i].substr(k, 2), 16) * (1 - f) + parseInt(PALETTE[i + 1].substr(k, 2), 16) * f);
  const [r, g, b] = [1, 3, 5].map(mix);
  return {bg: `rgb(${r},${g},${b})`, ink: 0.299 * r + 0.587 * g + 0.114 * b > 128 ? "#000" : "#fff"};
}
const shown = s => s.replace(/\\n/g, "\\u21b5").replace(/ /g, "\\u2423");
const log = document.getElementById("log"), tip = document.getElementById("tip");
const input = document.getElementById("request"), send = document.getElementById("send");
for (const p of [0.01, 0.03, 0.1, 0.3, 1]) {
  const s = document.createElement("span"), c = shade(p);
  s.textContent = p; s.style.background = c.bg; s.style.color = c.ink;
  document.getElementById("legend").appendChild(s);
}
function line(who, cls) {
  const div = document.createElement("div"), name = document.createElement("span"), body = document.createElement("span");
  div.className = "turn " + cls; name.className = "who"; name.textContent = who; body.className = "body";
  div.append(name, body); log.appendChild(div);
  return body;
}
// A probability to 3 decimals and a percentage to 1, or either to 2 significant digits
// where that would show fewer: at a high temperature the model can draw a token it gave
// 3e-8, which "0.000" would deny, and 0.14% is not "0.1%" beside 0.018%.
const prob = p => p >= 0.0005 || p === 0 ? p.toFixed(3) : p.toPrecision(2);
const pct = q => q >= 0.0095 || q === 0 ? (100 * q).toFixed(1) : (100 * q).toPrecision(2);
function addToken(answer, msg) {
  const s = document.createElement("span"), c = shade(msg.p);
  s.className = "tok"; s.tabIndex = 0; s.textContent = msg.token;
  s.style.background = c.bg; s.style.color = c.ink;
  s.dataset.tip = `p = ${prob(msg.p)}\\n` + msg.alternatives.map(([t, q]) =>
    `${t === msg.token ? "\\u25b8" : " "} ${shown(t).padEnd(12)} ${pct(q).padStart(5)}%`).join("\\n");
  s.setAttribute("aria-label", `${msg.token}, probability ${prob(msg.p)}`);
  if (msg.special) {     // <|pad|>: a special token the model wrote, not text
    s.classList.add("special");
    s.dataset.tip = "a special token, not text: the filler of the request's empty slots\\n" + s.dataset.tip;
  }
  answer.appendChild(s);
}
function showTip(e) {
  const s = e.target.closest(".tok");
  if (!s) return;
  tip.textContent = s.dataset.tip; tip.style.display = "block";
  const r = s.getBoundingClientRect();
  tip.style.left = (window.scrollX + r.left) + "px"; tip.style.top = (window.scrollY + r.bottom + 6) + "px";
}
const hideTip = () => { tip.style.display = "none"; };
log.addEventListener("mouseover", showTip); log.addEventListener("focusin", showTip);
log.addEventListener("mouseout", hideTip); log.addEventListener("focusout", hideTip);
// A whole class may press Enter at once. The server computes a few answers at a time and
// answers the others 503 with Retry-After (seconds): wait that long, plus up to as long
// again at random so that the waiting pages do not all come back together, and ask again,
// at most BUSY_RETRIES times. A request that got no answer at all (fetch rejects: the
// connection was refused or reset) is sent once more, a second later.
const BUSY_RETRIES = 10;
const sleep = seconds => new Promise(done => setTimeout(done, 1000 * seconds));
async function post(request, note) {
  let resent = false;
  for (let retries = 0; ; retries++) {
    let res;
    try {
      res = await fetch("/api/chat", {method: "POST", headers: {"Content-Type": "application/json"},
                                      body: JSON.stringify({request})});
    } catch (err) {
      if (resent) throw err;
      resent = true; note.textContent = " waiting for the model..."; await sleep(1); continue;
    }
    const wait = parseFloat(res.headers.get("Retry-After"));
    if (res.status !== 503 || !(wait >= 0) || retries >= BUSY_RETRIES) return res;
    note.textContent = " waiting for the model...";
    await sleep(Math.min(wait, 10) * (1 + Math.random()));
  }
}
async function ask(request) {
  line("you", "user").textContent = request;
  const answer = line("microgpt", "assistant"), note = document.createElement("span");
  note.className = "note"; answer.appendChild(note);
  try {
    const res = await post(request, note);
    note.remove();
    if (!res.ok) {
      const e = await res.json().catch(() => ({error: res.status + " " + res.statusText}));
      throw new Error(e.error);
    }
    const reader = res.body.getReader(), decoder = new TextDecoder();
    let buffer = "", done = false;
    while (!done) {
      const chunk = await reader.read();
      buffer += decoder.decode(chunk.value || new Uint8Array(), {stream: !chunk.done});
      let i;
      while ((i = buffer.indexOf("\\n")) >= 0) {
        const msg = JSON.parse(buffer.slice(0, i));
        buffer = buffer.slice(i + 1);
        if (msg.done) {
          answer.parentNode.dataset.done = "1"; answer.parentNode.dataset.seed = msg.seed; done = true;
          if (!msg.tokens) {
            const e = document.createElement("span");
            e.className = "note"; e.textContent = "(no answer: the model ended its turn at once)";
            answer.appendChild(e);
          }
        }
        else addToken(answer, msg);
      }
      if (chunk.done && !done) throw new Error("the answer was cut off");
    }
  } catch (err) {
    note.remove();
    const e = document.createElement("span");
    e.className = "error"; e.textContent = " " + err.message;
    answer.appendChild(e); answer.parentNode.dataset.done = "error";
  }
}
document.getElementById("ask").addEventListener("submit", async e => {
  e.preventDefault();
  const request = input.value.trim();
  if (!request) return;
  input.value = ""; send.disabled = true;
  try { await ask(request); } finally { send.disabled = false; input.focus(); }
});
</script>
</body></html>
"""


def run_serve(args, stop):
    """--serve: load a chat model and serve the chat page until Ctrl-C or SIGTERM."""
    how = "train one with `python microgpt.py --chat --save chat.json`, then run " \
          "`python microgpt.py --load chat.json --serve`"
    if not args.serve:
        raise BadInput(f"--{'port' if args.port is not None else 'host'} applies to --serve")
    if not args.load:
        raise BadInput(f"--serve needs a chat model: {how}")
    if args.host == "":
        raise BadInput("--host needs an address, such as 127.0.0.1")
    unset = vars(make_parser().parse_args([]))      # every option as it is when left out
    others = [key for key, value in vars(args).items()
              if value != unset.get(key) and key not in ("serve", "port", "host", "load", "temperature", "seed")]
    if others:
        raise BadInput(f"--serve only serves a loaded chat model: leave out --{others[0].replace('_', '-')}")
    defaults = Config()
    temperature = defaults.temperature if args.temperature is None else args.temperature
    seed = defaults.seed if args.seed is None else args.seed
    if not 0 <= temperature <= 10:
        raise BadInput(f"--temperature must be from 0 (always the likeliest token) to 10, not {temperature}")
    config, chars, params, mode, _ = load_checkpoint(args.load)
    if mode != "chat":
        raise BadInput(f"{args.load} is not a chat model (its mode is {mode!r}): {how}")
    weights = inference_weights(params)
    check_finite_scores(weights, config)

    def reply(request, rng, temperature):
        return chat_reply(weights, config, chars, as_the_model_reads(request, chars), rng, temperature)
    info = {"model": {key: getattr(config, key) for key in MODEL_SHAPE}, "vocabulary": len(chars),
            "temperature": temperature}
    host = args.host if args.host is not None else "127.0.0.1"
    port = args.port if args.port is not None else 8000
    try:
        server = ChatServer(host, port, reply, info, temperature, seed)
    except OSError as e:
        raise BadInput(f"cannot listen on {host} port {port}: {e.strerror or e}"
                       + (" (choose another with --port N)" if e.errno == errno.EADDRINUSE else "")) from None
    try:
        if not is_loopback(host):
            print(f"microgpt: warning: listening on {host}: anyone who can reach this machine on port "
                  f"{server.port} can use this chat (no password, no encryption)", file=sys.stderr, flush=True)
        shown = "127.0.0.1" if is_wildcard(host) else f"[{host}]" if ":" in host else host
        print(f"serving the chat at http://{shown}:{server.port}/ (Ctrl-C stops it)", flush=True)
        if is_wildcard(host):            # 127.0.0.1 is this machine's own: give students another
            addresses = lan_addresses()
            where = " or ".join(f"http://{a}:{server.port}/" for a in addresses) or \
                f"http://ADDRESS:{server.port}/, ADDRESS being this machine's IP address (none found)"
            print(f"on other machines of this network, open {where}", flush=True)
        # The cycle collector is paused for training's sake (Part II, II.3); a server runs
        # for days and makes cyclic garbage of its own (exceptions, sockets).
        gc.enable()
        server.serve_forever(poll_interval=0.5)
    finally:
        server.server_close()
    return 0


if __name__ == "__main__":
    exit_program(main())
