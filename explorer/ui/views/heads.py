"""Attention heads in the app: their importance (Model page), how alike they are and one
head's attention pattern on one sentence (Similarity page). Shown only for a model with
heads (``bundle.heads``); the figures come from :mod:`explorer.look.heads`.

Results shared between sessions are keyed by the session's key (a digest of the model's and
the data's content), as every shared cache is.
"""

from __future__ import annotations

import numpy as np
import streamlit as st

from explorer.bundle import ModelBundle
from explorer.data import ValidationSet
from explorer.errors import ExplorerError
from explorer.look.heads import AttentionPattern, attention_pattern, head_scores, head_similarity
from explorer.look.sentences import reads_text, sentences, tokens
from explorer.plan import criterion_names
from explorer.ui.charts import heads as charts
from explorer.ui.state import Session

CRITERION_KEY = "heads_criterion"  # the Model page's head criterion
ATTENTION_KEY = "heads_attention"  # the Similarity page's attention (its unit name)
HEAD_KEY = "heads_head"  # the head whose pattern is drawn
SENTENCE_KEY = "heads_sentence"  # the validation sample it is drawn on
IMPORTANCE_CHART, SIMILARITY_CHART, PATTERN_CHART = (
    "heads_importance", "heads_similarity", "heads_pattern")


def importance_section(session: Session) -> None:
    """Every attention's heads scored by a chosen head criterion, as a heads plan ranks them."""
    bundle = session.bundle
    st.subheader("Attention heads")
    choices = criterion_names("heads")
    criterion = st.selectbox("Head criterion", choices, key=CRITERION_KEY,
                             help="how a heads plan scores each head; the lowest go first")
    try:
        with st.spinner(f"Scoring every head by {criterion}..."):
            table = head_scores(bundle, session.evaluator.scores, criterion)
    except ExplorerError as exc:
        st.warning(f"The heads cannot be scored by {criterion}: {exc}")
        return
    st.plotly_chart(charts.importance(table), key=IMPORTANCE_CHART,
                    config={"displaylogo": False})
    heads = int(np.isfinite(table.scores).sum())
    st.caption(f"{len(table.attentions)} attentions, {heads} heads. Each row is ranked "
               "within itself: a heads plan removes an attention's heads lowest score first "
               "(hover for the rank).")


@st.cache_data(show_spinner="Comparing the heads' outputs over the validation set...",
               max_entries=32)
def _similarity(key: str, attention: str, _bundle: ModelBundle,
                _data: ValidationSet) -> np.ndarray:
    return head_similarity(_bundle, _data, attention)


@st.cache_data(show_spinner=False, max_entries=256)
def _pattern(key: str, attention: str, head: int, index: int, _bundle: ModelBundle,
             _data: ValidationSet) -> AttentionPattern:
    return attention_pattern(_bundle, _data.x[index], attention, head)


def similarity_section(session: Session) -> None:
    """One attention's heads x heads similarity, then one head's pattern on one sentence."""
    bundle, data = session.bundle, session.data
    if data is None:
        st.info("Comparing heads needs validation data to run the model on.")
        return
    groups = {g.name: g for g in bundle.heads}
    if st.session_state.get(ATTENTION_KEY) not in groups:
        st.session_state[ATTENTION_KEY] = next(iter(groups))
    name = st.selectbox("Attention", list(groups), key=ATTENTION_KEY,
                        format_func=lambda n: f"{charts.layer_label(groups[n].module)} "
                                              f"({groups[n].heads} heads)")
    group = groups[name]
    try:
        matrix = _similarity(session.key, name, bundle, data)
    except ExplorerError as exc:
        st.error(f"Could not compare the heads of {group.module}: {exc}")
        return
    left, right = st.columns([1, 1], gap="large")
    left.plotly_chart(charts.similarity(matrix, group.module), key=SIMILARITY_CHART,
                      config={"displaylogo": False})
    off = matrix + np.diag(np.full(len(matrix), -np.inf))
    i, j = np.unravel_index(int(np.argmax(off)), off.shape)
    left.caption(f"Cosine similarity of what each head writes (its output times its columns "
                 f"of the output projection) over every non-padding token of the "
                 f"{len(data)} validation samples. Most alike: heads {min(i, j)} and "
                 f"{max(i, j)} ({matrix[i, j]:.3f}).")
    with right:
        _pattern_view(session, name)


def _pattern_view(session: Session, name: str) -> None:
    """One head's attention probabilities on one validation sample, tokens on both axes."""
    bundle, data = session.bundle, session.data
    group = bundle.head_group(name)
    texts = sentences(bundle.card, data.x)
    h_col, s_col = st.columns([1, 3])
    if st.session_state.get(HEAD_KEY) not in range(group.heads):
        st.session_state[HEAD_KEY] = 0
    head = h_col.selectbox("Head", list(range(group.heads)), key=HEAD_KEY)
    if st.session_state.get(SENTENCE_KEY) not in range(len(data)):
        st.session_state[SENTENCE_KEY] = 0
    index = s_col.selectbox(
        "Sentence" if texts else "Sample", list(range(len(data))), key=SENTENCE_KEY,
        format_func=lambda k: f"#{k}: {texts[k]}" if texts else f"#{k}")
    try:
        result = _pattern(session.key, name, head, index, bundle, data)
    except ExplorerError as exc:
        st.error(f"Could not draw the pattern: {exc}")
        return
    labels = (tokens(bundle.card, data.x[index]) if reads_text(bundle.card)
              else [str(p) for p in result.positions])
    st.plotly_chart(charts.pattern(result, labels, group.module), key=PATTERN_CHART,
                    config={"displaylogo": False})
    st.caption("Each row is one token's attention over the sentence (it sums to 1); padding "
               "is left out. Recomputed as softmax(q k^T / sqrt(d)) from the attention's "
               "input and the head's query and key weights.")
