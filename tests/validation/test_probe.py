"""The logistic probe, validation's baseline predictor."""

import torch


def test_logistic_probe_that_stops_early_logs_one_line_not_a_warning(monkeypatch, caplog):
    import warnings

    import sklearn.linear_model

    from isplit.validation import linear_probe

    class OneStep(sklearn.linear_model.LogisticRegression):
        def __init__(self, max_iter=100, random_state=None):
            super().__init__(max_iter=1, random_state=random_state)

    monkeypatch.setattr(sklearn.linear_model, "LogisticRegression", OneStep)
    g = torch.Generator().manual_seed(0)
    z = torch.randn(120, 8, 4, 4, generator=g)
    y = torch.randint(0, 3, (120,), generator=g)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # sklearn's ConvergenceWarning would raise here
        with caplog.at_level("INFO", logger="isplit"):
            accuracy = linear_probe(z[:80], y[:80], z[80:], y[80:])
    assert 0.0 <= accuracy <= 1.0
    assert "stopped at 1 iterations before converging" in caplog.text
