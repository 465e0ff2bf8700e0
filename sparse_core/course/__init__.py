"""The course machinery: the chapters (:mod:`~sparse_core.course.manifest`), whose code the graded
tests import (:mod:`~sparse_core.course.impl`), the pytest plugin (:mod:`~sparse_core.course.plugin`),
the grader (:mod:`~sparse_core.course.runner`), readable comparisons (:mod:`~sparse_core.course.compare`),
each chapter's checks (:mod:`sparse_core.course.checks`), the book's tables
(:mod:`~sparse_core.course.table`), the machine-and-date line printed beside timings
(:mod:`~sparse_core.course.machine`) and the book's Sphinx extension that gives each page each
script once (:mod:`~sparse_core.course.sphinx_pages`)."""
