"""The course machinery: whose code the graded tests import (:mod:`~sparse_core.course.impl`),
the pytest plugin (:mod:`~sparse_core.course.plugin`), the grader (:mod:`~sparse_core.course.runner`),
readable comparisons (:mod:`~sparse_core.course.compare`) and each chapter's checks
(:mod:`sparse_core.course.checks`)."""
