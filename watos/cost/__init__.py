"""Cost formulas shared by the costing passes, the strategy search and the reports: a kernel's roofline
time (:mod:`~watos.cost.kernel`), the pipeline schedule's time and in-flight micro-batches
(:mod:`~watos.cost.pipeline`), memory per device (:mod:`~watos.cost.memory`), Sender/Helper checkpoint
traffic (:mod:`~watos.cost.borrowing`) and the step metrics every strategy reports
(:mod:`~watos.cost.metrics`). Pure functions of numbers, analyses and the hardware: no pass lives here.
"""
