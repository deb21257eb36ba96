"""The classification family's floor: bag-of-words, tf-idf + logistic regression (ridge regression for a score),
fitted on the training file alone with scikit-learn.

Features: word unigrams and bigrams, sublinear tf (1 + log tf), l2-normalised rows. A sentence pair (MRPC, MNLI,
STS-B...) is three blocks side by side over one vocabulary: sentence A, sentence B, and their element-wise product,
which is non-zero only on the words the two share (the overlap a bag of words can see). The regularisation
strength (C, or ridge's alpha) is chosen by 5-fold cross-validation on the training file (stratified for classes,
shuffled with a fixed seed), scored by the task's main metric where scikit-learn has it; the model is then refit
on the whole training file and scores the evaluated examples with the task's metrics, as the models are scored.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from bertcli.errors import UsageError
from bertcli.metrics import compute_metrics
from bertcli.report import EvalResult
from bertcli.tasks.base import EvalPlan
from bertcli.tasks.classification.data import TaskExamples, TaskSpec, read_examples
from bertcli.tasks.floor import FOLDS, SEED, check_train_file, evaluated_examples, floor_result

CLASSIFIER = "bag-of-words (tf-idf + logistic regression)"
REGRESSOR = "bag-of-words (tf-idf + ridge regression)"
C_GRID = (0.1, 1.0, 10.0, 100.0)  # tf-idf rows are l2-normalised: weaker C underfits a text classifier
ALPHA_GRID = (0.1, 1.0, 10.0, 100.0)
# the task's metric -> scikit-learn's scorer of the same number (f1: GLUE's binary F1 of class 1)
SCORERS = {"accuracy": "accuracy", "matthews_correlation": "matthews_corrcoef", "f1": "f1"}


def classification_floor(train_path: Path, plan: EvalPlan, cfg) -> EvalResult:
    """`TaskFamily.floor`: fit on `train_path`, predict the plan's examples, score them with the plan's metrics."""
    started = time.perf_counter()
    spec: TaskSpec = plan.spec
    options = dict(fmt=cfg.data.format, empty_text=cfg.data.empty_text, require_labels=True)
    train = read_examples(spec, check_train_file(train_path), **options)
    examples = evaluated_examples(plan, lambda path: read_examples(spec, path, **options))
    features = PairFeatures().fit(train)
    x_train, x_eval = features.transform(train), features.transform(examples)
    if spec.is_regression:
        predictions = _fit_ridge(x_train, np.asarray(train.labels, dtype=float)).predict(x_eval).tolist()
    else:
        model = _fit_logistic(x_train, np.asarray(train.labels), spec, train_path)
        predictions = [int(p) for p in model.predict(x_eval)]
    metrics = compute_metrics(plan.metrics, predictions, examples.labels, num_labels=spec.num_labels)
    name = REGRESSOR if spec.is_regression else CLASSIFIER
    return floor_result(name, plan, metrics, len(examples), started, predictions)


class PairFeatures:
    """tf-idf of word unigrams and bigrams (sublinear tf) over the training file's texts; a pair of texts becomes
    [A, B, A * B] (one vocabulary for both, the product marks the words they share)."""

    def fit(self, train: TaskExamples) -> PairFeatures:
        from sklearn.feature_extraction.text import TfidfVectorizer

        self.vectorizer = TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True, lowercase=True)
        try:
            self.vectorizer.fit(train.text_a + (train.text_b or []))
        except ValueError:  # nothing but stop words or punctuation
            raise UsageError(f"{train.path}: no words to build a bag-of-words floor from") from None
        return self

    def transform(self, examples: TaskExamples):
        from scipy import sparse

        a = self.vectorizer.transform(examples.text_a)
        if examples.text_b is None:
            return a
        b = self.vectorizer.transform(examples.text_b)
        return sparse.hstack([a, b, a.multiply(b)], format="csr")


def _fit_logistic(x, y: np.ndarray, spec: TaskSpec, train_path: Path):
    from sklearn.linear_model import LogisticRegression

    seen = np.unique(y)
    if len(seen) < 2:
        raise UsageError(f"{train_path}: every example has the label {spec.label_names[int(seen[0])]!r}; the floor "
                         "needs two classes to learn")  # fmt: skip
    # liblinear: fast on sparse two-class problems; lbfgs: the multinomial model of three classes and more
    base = LogisticRegression(solver="liblinear" if len(seen) == 2 else "lbfgs", max_iter=1000)
    scoring = SCORERS.get(spec.main_metric, "accuracy")
    if scoring == "f1" and spec.num_labels > 2:
        scoring = "f1_macro"  # bertcli's f1 of more than two classes
    return _cross_validated(base, {"C": list(C_GRID)}, x, y, scoring, stratified=True)


def _fit_ridge(x, y: np.ndarray):
    from sklearn.linear_model import Ridge

    return _cross_validated(Ridge(), {"alpha": list(ALPHA_GRID)}, x, y, "r2", stratified=False)


def _cross_validated(base, grid: dict, x, y: np.ndarray, scoring: str, stratified: bool):
    """`base` with the grid's value that scores best over the training file's folds, refit on all of it. A file
    too small for two folds per class keeps scikit-learn's default strength."""
    from sklearn.model_selection import GridSearchCV, KFold, StratifiedKFold

    folds = min(FOLDS, int(np.unique(y, return_counts=True)[1].min()) if stratified else len(y))
    if folds < 2:
        return base.fit(x, y)
    splitter = StratifiedKFold if stratified else KFold
    search = GridSearchCV(base, grid, scoring=scoring, cv=splitter(folds, shuffle=True, random_state=SEED))
    return search.fit(x, y).best_estimator_
