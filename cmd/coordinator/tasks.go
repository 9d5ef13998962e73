package main

// KeepsEveryTask reports whether the app keeps every task for good (the
// ledger tier): only then does a line without an enrollment task prove that
// nothing was enrolled (lms.Complete).
func (t appTasks) KeepsEveryTask() bool { return t.a.pool != nil }
