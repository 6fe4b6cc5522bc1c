"""Validation against published training runs: the cases (:mod:`~watos.validation.cases`), one case's
prediction (:mod:`~watos.validation.predict`), what a file's predictions say (:mod:`~watos.validation.report`),
and the calibration of the efficiency parameters on them, with leave-one-source-out
(:mod:`~watos.validation.calibrate`)."""
