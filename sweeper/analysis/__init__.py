"""What the results mean: aggregation over repeats (`aggregate`), findings stated in
words (`findings`), the in-process ceiling a trial is measured against (`ceiling`
measures it, `efficiency` joins it onto the results table), runs side by side
(`compare`) and whether client and server agree on a trial's latency (`agreement`).
How sure the run is of its figures: `confidence` (bootstrap intervals over windows and
repeats).
"""
