"""Queries → ranked results (text, photo, weighted combinations, filters, sort orders, near-duplicates)."""

from photosearch.search.engine import Filters, Result, Searcher, near_duplicate_groups
from photosearch.search.query import QueryError, Term, parse_query

__all__ = ["Filters", "QueryError", "Result", "Searcher", "Term", "near_duplicate_groups", "parse_query"]
