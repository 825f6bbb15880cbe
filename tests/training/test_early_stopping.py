from nextloc.training.early_stopping import Decision, EarlyStopping

IMPROVED, WAIT, TRIGGER, STOP = Decision.IMPROVED, Decision.WAIT, Decision.TRIGGER, Decision.STOP


def run(stopper, losses):
    return [stopper.step(loss, epoch) for epoch, loss in enumerate(losses)]


class TestEarlyStopping:
    def test_first_loss_is_an_improvement(self):
        stopper = EarlyStopping(patience=3, min_delta=0.25, max_triggers=3)
        assert run(stopper, [5.0]) == [IMPROVED]
        assert (stopper.best_loss, stopper.best_epoch) == (5.0, 0)

    def test_improvement_must_exceed_min_delta(self):
        """min_delta 0.25 from best 1.0: 0.75 (a drop of exactly 0.25) waits, 0.5 improves."""
        stopper = EarlyStopping(patience=3, min_delta=0.25, max_triggers=3)
        assert run(stopper, [1.0, 0.75, 0.5]) == [IMPROVED, WAIT, IMPROVED]
        assert (stopper.best_loss, stopper.best_epoch) == (0.5, 2)

    def test_small_drop_does_not_move_the_best_loss(self):
        """A drop within min_delta is no new best: the next comparison is still against 1.0."""
        stopper = EarlyStopping(patience=5, min_delta=0.25, max_triggers=3)
        assert run(stopper, [1.0, 0.875, 0.75, 0.625]) == [IMPROVED, WAIT, WAIT, IMPROVED]

    def test_triggers_after_patience_epochs_without_improvement(self):
        """Patience 3: epochs 1 and 2 wait, epoch 3 triggers."""
        stopper = EarlyStopping(patience=3, min_delta=0.0, max_triggers=3)
        assert run(stopper, [1.0, 1.0, 2.0, 1.5]) == [IMPROVED, WAIT, WAIT, TRIGGER]
        assert stopper.triggers == 1

    def test_improvement_resets_the_counter(self):
        stopper = EarlyStopping(patience=2, min_delta=0.0, max_triggers=3)
        assert run(stopper, [1.0, 1.0, 0.5, 0.5, 0.5]) == [IMPROVED, WAIT, IMPROVED, WAIT, TRIGGER]

    def test_trigger_restarts_the_count_and_keeps_the_best_loss(self):
        """After a trigger, patience counts again from 0 against the old best 1.0."""
        stopper = EarlyStopping(patience=2, min_delta=0.0, max_triggers=3)
        assert run(stopper, [1.0, 1.2, 1.1, 1.05, 0.9]) == [IMPROVED, WAIT, TRIGGER, WAIT, IMPROVED]
        assert (stopper.best_loss, stopper.best_epoch, stopper.counter) == (0.9, 4, 0)

    def test_third_trigger_stops(self):
        stopper = EarlyStopping(patience=2, min_delta=0.001, max_triggers=3)
        decisions = run(stopper, [1.0] + [1.0] * 6)
        assert decisions == [IMPROVED, WAIT, TRIGGER, WAIT, TRIGGER, WAIT, STOP]
        assert stopper.best_epoch == 0

    def test_state_dict_round_trip_continues_identically(self):
        losses = [1.0, 0.9, 0.95, 0.97, 0.99, 0.8, 0.85, 0.86, 0.87, 0.88]
        stopper = EarlyStopping(patience=2, min_delta=0.001, max_triggers=3)
        first = run(stopper, losses[:4])
        restored = EarlyStopping(patience=2, min_delta=0.001, max_triggers=3)
        restored.load_state_dict(stopper.state_dict())
        assert restored == stopper
        rest = [restored.step(loss, epoch) for epoch, loss in enumerate(losses[4:], start=4)]
        reference = run(EarlyStopping(patience=2, min_delta=0.001, max_triggers=3), losses)
        assert first + rest == reference
        assert rest[-1] is STOP
