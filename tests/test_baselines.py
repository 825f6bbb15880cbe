import pandas as pd

from nextloc.baselines import baseline_accuracy, most_frequent_in_history, most_frequent_of_user
from nextloc.data.batches import SplitTensors


def split(locations, users, samples):
    """A split from per-row locations and users and (start, end) history ranges; targets at ``end``."""
    n = len(locations)
    staypoints = pd.DataFrame({"user_id": users, "location_id": locations, "start_day": range(n),
                               "start_min": 0, "weekday": 0, "duration": 60})
    frame = pd.DataFrame(samples, columns=["history_start", "history_end"])
    return SplitTensors(staypoints, frame.assign(target_index=frame["history_end"]))


class TestMostFrequentInHistory:
    def test_predicts_the_history_mode_and_the_earliest_on_ties(self):
        """History [5, 3, 3] -> 3; history [4, 6] (a tie) -> 4."""
        data = split([5, 3, 3, 9, 4, 6, 2], [1] * 7, [(0, 3), (4, 6)])
        assert most_frequent_in_history(data).tolist() == [3, 4]


class TestMostFrequentOfUser:
    def test_predicts_the_users_most_frequent_training_target(self):
        """User 1's training targets are 7, 7, 8 -> 7; user 2 has none -> 1 (unseen)."""
        train = split([2, 7, 7, 8], [1, 1, 1, 1], [(0, 1), (0, 2), (0, 3)])
        test = split([3, 3, 4, 4], [1, 1, 2, 2], [(0, 1), (2, 3)])
        assert most_frequent_of_user(train, test).tolist() == [7, 1]

    def test_accuracy_is_in_percent(self):
        train = split([2, 7, 7, 8], [1, 1, 1, 1], [(0, 1), (0, 2), (0, 3)])
        test = split([3, 7, 4, 1], [1, 1, 2, 2], [(0, 1), (2, 3)])
        assert baseline_accuracy(train, test)["most_frequent_of_user_acc@1"] == 100.0
