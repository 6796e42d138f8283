"""Every op of the table is checked: it has OpTests in tests/opdb.py or a reason in
opdb.NO_TESTS, and the database names only ops that exist."""
from vkgrad.ops import OPS

from opdb import NO_TESTS, OPDB, op_tests


def test_every_op_has_tests_or_a_reason():
    missing = [name for name in sorted(OPS) if not op_tests(name) and name not in NO_TESTS]
    assert not missing, f"ops with no OpTests in tests/opdb.py and no reason in NO_TESTS: {missing}"


def test_the_database_names_only_ops_of_the_table():
    assert not set(OPDB) - set(OPS)
    assert not set(NO_TESTS) - set(OPS)


def test_a_reason_is_given_only_for_an_op_without_tests():
    assert not [name for name in NO_TESTS if op_tests(name)]
