"""Airflow DAG `ops_runner_tick`: one `ops-runner tick` every 5 minutes, the command cron runs.

Copy this file into Airflow's dags folder; Airflow is not a dependency of ops-runner.

The tick decides what is due (market calendar, holidays, DST, deadlines; it works in UTC), so
this DAG encodes no market hours. The tick locks the workbook itself: one that starts while
another runs prints "busy: ..." and exits 0. It is never retried either: retrying a tick is just
the next tick.

Where the paths come from, first match wins:
  OPS_RUNNER_BIN       the Airflow Variable, else the environment the DAG is parsed in, else the
                       placeholder below (the ops-runner in the project's venv)
  OPS_RUNNER_WORKBOOK  likewise (the workbook folder holding config.yaml)

Secrets are not Airflow's business: keep them out of Variables, Connections and this file. The
tick reads them from the 0600 file named by `secrets.file` in the workbook's config.yaml, or
from the worker's environment.
"""

from __future__ import annotations

import os
from datetime import timedelta

import pendulum

try:  # Airflow 3
    from airflow.providers.standard.operators.bash import BashOperator
    from airflow.sdk import DAG
except ImportError:  # Airflow 2.4+
    from airflow import DAG
    from airflow.operators.bash import BashOperator

DEFAULTS = {
    "bin": os.environ.get("OPS_RUNNER_BIN", "/path/to/ops-runner-project/.venv/bin/ops-runner"),
    "workbook": os.environ.get("OPS_RUNNER_WORKBOOK", "/path/to/workbook"),
}

# The paths reach bash through the environment, quoted, never pasted into the command text.
TICK_COMMAND = '"$OPS_RUNNER_BIN" --workbook "$OPS_RUNNER_WORKBOOK" tick'

with DAG(
    dag_id="ops_runner_tick",
    description="ops-runner tick every 5 minutes; the tick knows the market calendar",
    schedule="*/5 * * * *",
    start_date=pendulum.datetime(2025, 1, 1, tz="UTC"),
    catchup=False,  # a missed tick is not owed: the next tick sees everything that is due
    max_active_runs=1,
    dagrun_timeout=timedelta(minutes=50),
    user_defined_macros={"ops_runner_default": DEFAULTS},
    tags=["ops-runner"],
) as dag:
    BashOperator(
        task_id="tick",
        bash_command=TICK_COMMAND,
        env={
            "OPS_RUNNER_BIN": "{{ var.value.get('OPS_RUNNER_BIN', ops_runner_default['bin']) }}",
            "OPS_RUNNER_WORKBOOK": (
                "{{ var.value.get('OPS_RUNNER_WORKBOOK', ops_runner_default['workbook']) }}"
            ),
        },
        append_env=True,  # keep the worker's PATH, HOME and any OPS_RUNNER_* secrets
        retries=0,
        # A rebalance night's tick executes the production notebooks.
        execution_timeout=timedelta(minutes=45),
    )
