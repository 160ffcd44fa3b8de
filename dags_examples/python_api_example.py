"""The wine classifier pipeline written with the Python API: a twin of wine/pipeline.yaml.

Same steps, params and commands, on the local target: it computes the same cache keys as
`mlpipe run --local wine/pipeline.yaml` and shares those results in the store. Only the
DAG id differs (two DAGs in one folder need two ids). Relative paths (`source`) resolve
against this file's folder, because this file calls to_dag().
"""

from airflow_mlpipe import ParamSpec, Pipeline, Step

# What `defaults:` does in YAML: fields shared by every step.
defaults = {"retries": 1, "timeout": "10m"}

prepare = Step(
    name="prepare",
    description="Takes the day's snapshot of the data and splits it into train and test sets.",
    source={"include": ["prepare.py", "common.py"]},
    command=[
        "python", "prepare.py",
        "--date", "{{ run_date }}",
        "--test-size", "{{ params.test_size }}",
        "--seed", "{{ params.seed }}",
        "--out", "{{ outputs.dataset }}",
    ],
    outputs=["dataset"],
    **defaults,
)  # fmt: skip

train = Step(
    name="train",
    description="Fits a random forest on the training split.",
    source={"include": ["train.py", "common.py"]},
    inputs={"dataset": prepare.output("dataset")},
    command=[
        "python", "train.py",
        "--data", "{{ inputs.dataset }}",
        "--n-estimators", "{{ params.n_estimators }}",
        "--max-depth", "{{ params.max_depth }}",
        "--out", "{{ outputs.model }}",
    ],
    outputs=["model"],
    **defaults,
)  # fmt: skip

evaluate = Step(
    name="evaluate",
    description="Scores the model on the test split; accuracy and macro F1 become metrics.",
    source={"include": ["evaluate.py", "common.py"]},
    inputs={"model": train.output("model"), "dataset": prepare.output("dataset")},
    command=[
        "python", "evaluate.py",
        "--model", "{{ inputs.model }}",
        "--data", "{{ inputs.dataset }}",
        "--out", "{{ outputs.report }}",
    ],
    outputs=["report"],
    **defaults,
)  # fmt: skip

register = Step(
    name="register",
    description="Writes a versioned model directory (model and model card) if the model is good enough.",
    source={"include": ["register.py", "common.py"]},
    inputs={"model": train.output("model"), "report": evaluate.output("report")},
    command=[
        "python", "register.py",
        "--model", "{{ inputs.model }}",
        "--report", "{{ inputs.report }}",
        "--min-accuracy", "{{ params.min_accuracy }}",
        "--model-name", "{{ params.model_name }}",
        "--date", "{{ run_date }}",
        "--out", "{{ outputs.release }}",
    ],
    outputs=["release"],
    **defaults,
)  # fmt: skip

pipeline = Pipeline(
    name="wine_classifier_python",
    description="The wine classifier of wine/pipeline.yaml, written with the Python API.",
    schedule="@daily",
    start_date="2026-11-01",
    catchup=False,
    tags=["example", "sklearn"],
    source="wine/steps",
    params={
        "test_size": ParamSpec(
            type="number", default=0.25, minimum=0.1, maximum=0.5,
            description="Fraction of the day's snapshot held out for evaluation.",
        ),
        "seed": ParamSpec(type="integer", default=7, description="Seed of the train/test split."),
        "n_estimators": ParamSpec(
            type="integer", default=50, minimum=1, maximum=1000, description="Number of trees in the forest."
        ),
        "max_depth": ParamSpec(
            type="integer", default=4, minimum=1, maximum=32, description="Maximum depth of each tree."
        ),
        "min_accuracy": ParamSpec(
            type="number", default=0.8, minimum=0, maximum=1,
            description="Register the model only when its test accuracy reaches this.",
        ),
        "model_name": ParamSpec(
            type="string", default="wine-classifier", description="Name under which the model is registered."
        ),
    },
    steps=[prepare, train, evaluate, register],
)  # fmt: skip

dag = pipeline.to_dag()
