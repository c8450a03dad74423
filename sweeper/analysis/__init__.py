"""What the results mean: aggregation over repeats (`aggregate`), findings stated in
words (`findings`), the in-process ceiling a trial is measured against (`ceiling`
measures it, `efficiency` joins it onto the results table) and runs side by side
(`compare`).
How sure the run is of its figures: `confidence` (bootstrap intervals over windows and
repeats).
"""
