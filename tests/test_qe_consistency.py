"""The quality estimator sees the same features in training (vectorised) and in serving (`judge`)."""

from __future__ import annotations

import numpy as np
from synthetic_records import make_cascade

from crescade import Answer, Cascade, Outcomes
from crescade.engine.cascade import _answer_codes
from crescade.engine.features import final_answer


def _training_scores(c: Cascade, data: Outcomes, prev: np.ndarray | None) -> np.ndarray:
    n, m = data.n_prompts, data.n_models
    labels = c.cluster_of(data.prompts)
    feats = c._text_features(data.prompts, data.responses, data.finish_reason)
    finals = [[final_answer(r) for r in row] for row in data.responses]
    lf = c._logfreq(labels, finals, c.answer_tables_)
    rows, models = np.repeat(np.arange(n), m), np.tile(np.arange(m), n)
    text = c.text_.score([data.responses[i][j] for i, j in zip(rows, models, strict=True)]).reshape(n, m)
    x = c._rows(rows, models, labels, feats, _answer_codes(finals), lf, data.logprobs,
                text, c.acc_table_, c.global_acc_, None if prev is None else prev[models])
    return c.qe_.predict(x).reshape(n, m)


def _serving_scores(c: Cascade, data: Outcomes, prev: np.ndarray | None) -> np.ndarray:
    out = np.zeros((data.n_prompts, data.n_models))
    for i, query in enumerate(data.prompts):
        plan = c.plan(query)
        for j, name in enumerate(data.models):
            history = [] if prev is None else [Answer(text=data.responses[i][prev[j]], model=data.models[prev[j]])]
            answer = Answer(text=data.responses[i][j], model=name)
            out[i, j] = c._score(query, answer, plan.cluster, history)
            if not history and len(plan.ladder) > 1:  # the public judge agrees with the private score
                assert c.judge(query, answer, plan=plan, tier=0).p == out[i, j]
    return out


def test_training_and_serving_features_agree(train: Outcomes, test_set: Outcomes) -> None:
    c = make_cascade(max_depth=3).fit(train)
    data = test_set.subset(np.arange(40))
    np.testing.assert_allclose(_training_scores(c, data, None), _serving_scores(c, data, None), rtol=1e-9)


def test_history_features_agree(train: Outcomes, test_set: Outcomes) -> None:
    c = make_cascade(max_depth=3).fit(train)
    data = test_set.subset(np.arange(40))
    prev = (np.arange(data.n_models) + 1) % data.n_models  # each model's answer judged after the next one's
    trained, served = _training_scores(c, data, prev), _serving_scores(c, data, prev)
    np.testing.assert_allclose(trained, served, rtol=1e-9)
    # agreement with an earlier answer moves the score: the feature is live, not constant
    assert not np.allclose(trained, _training_scores(c, data, None))


def test_vectorised_replay_matches_plan_and_judge(train: Outcomes, test_set: Outcomes) -> None:
    """`replay` takes exactly the decisions a serving loop of plan + judge takes on the same answers."""
    c = make_cascade(max_depth=3, quality_target=0.99).fit(train)
    r = c.replay(test_set)
    col = {name: test_set.models.index(name) for name in c.models_}
    assert r.escalated.any() and (~r.escalated).any()  # both paths are exercised
    for i, query in enumerate(test_set.prompts):
        plan = c.plan(query)
        history: list[Answer] = []
        cost = 0.0
        for tier, name in enumerate(plan.ladder):
            cost += test_set.cost[i, col[name]]
            answer = Answer(text=test_set.responses[i][col[name]], model=name)
            if not c.judge(query, answer, plan=plan, tier=tier, history=history).escalate:
                break
            history.append(answer)
        assert c.models_[r.model[i]] == name
        assert r.cost[i] == cost
        assert r.correct[i] == test_set.correct[i, col[name]]
        assert r.escalated[i] == (len(history) > 0)


def test_retargeted_copies_share_replay_scores(cascade: Cascade, test_set: Outcomes) -> None:
    a, b = cascade.retarget(quality_target=0.9), cascade.retarget(quality_target=0.99)
    assert a.replay_scores(test_set) is b.replay_scores(test_set)
    assert cascade.remove_model(cascade.models_[0]).replay_scores(test_set) is not a.replay_scores(test_set)


def test_auto_clusters_skip_what_small_data_cannot_support(train: Outcomes) -> None:
    small = train.subset(np.arange(40))
    c = make_cascade(n_clusters="auto", cluster_grid=(2, 32)).fit(small)
    assert c.n_clusters_ == 2  # 32 clusters of ~1 prompt could not be calibrated; 2 could


def test_valid_tool_calls_are_accepted_unless_told_to_judge(train: Outcomes, test_set: Outcomes) -> None:
    query = test_set.prompts[0]
    for policy, accepted in (("accept", True), ("judge", False)):
        c = make_cascade(tool_calls=policy, quality_target=0.99).fit(train)
        plan = c.plan(query)
        assert len(plan.ladder) > 1
        v = c.judge(query, Answer(text="", model=plan.ladder[0], tool_calls_valid=True), plan=plan, tier=0)
        assert ("tool call" in v.reason) == accepted
        assert v.escalate is (False if accepted else v.p < v.threshold)
