from knockgate.core.ratelimit import LogBudget


def test_burst_then_rate():
    budget = LogBudget(rate=10, burst=3)
    assert [budget.allow(100.0) for _ in range(5)] == [True, True, True, False, False]
    assert budget.take_suppressed() == 2
    assert budget.take_suppressed() == 0
    assert budget.allow(100.125)  # 0.125 s at 10/s earns one token
    assert not budget.allow(100.125)


def test_tokens_never_exceed_burst():
    budget = LogBudget(rate=1000, burst=2)
    budget.allow(0.0)
    assert [budget.allow(1000.0) for _ in range(3)] == [True, True, False]
