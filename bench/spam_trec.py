"""Spam classifier benchmark: keepmail vs bogofilter vs SpamAssassin Bayes, TREC protocol.

Unpacks the SpamAssassin public corpus from ../shared/corpora/ into a cache
folder, puts all messages in one fixed seeded random order and runs each
filter through the TREC online protocol over that order (classify, then learn
the true label).  keepmail starts from an EMPTY model: the starter model was
trained on this very corpus, so starting from it would be cheating.

Peers, each with private state in a temporary folder:
* bogofilter (Debian 1.2.5, defaults): ``-T`` to classify, ``-s``/``-n`` to learn;
* SpamAssassin 4 Bayes only, one Perl process driving Mail::SpamAssassin's
  API (check, then learn) so that start-up is paid once; the score is the
  Bayes probability (_BAYES_ tag); bayes_min_*_num lowered to 1 so it scores
  from the start of the online run.  Slow: use --sa-limit to run a prefix.

Then (unless --no-2fold) a 2-fold cross-validation on the same order for
keepmail and bogofilter, comparable to the reference in corpora.md.

    python bench/spam_trec.py [--seed 1] [--sa-limit N] [--no-sa] [--no-2fold]
                              [--no-bogofilter] [--warm]

bench/spam_speed.py times classification alone (ms per message, best of a few passes).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))

from keepmail.spam import trec  # noqa: E402
from keepmail.spam.classifier import Classifier  # noqa: E402

CORPUS_TAR = ROOT.parent / "shared" / "corpora" / "spamassassin-public-corpus.tar.xz"


def corpus_dir() -> Path:
    """The unpacked corpus in the cache folder (unpacked once)."""
    cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "keepmail-bench"
    target = cache / "spamassassin-public-corpus"
    if not (target / "spam-2").is_dir():
        cache.mkdir(parents=True, exist_ok=True)
        with tarfile.open(CORPUS_TAR) as tar:
            tar.extractall(cache, filter="data")
    return target


# -- bogofilter ---------------------------------------------------------------

def _bogo_score(out: str) -> float:
    parts = out.split()
    return float(parts[-1]) if len(parts) >= 2 else 0.5   # no wordlist yet: "unsure"


def bogofilter_online(items: Sequence[trec.Item]) -> trec.Result:
    with tempfile.TemporaryDirectory() as wl:
        scores, labels = [], []
        start = time.perf_counter()
        for it in items:
            proc = subprocess.run(["bogofilter", "-C", "-d", wl, "-T", "-I", str(it.path)],
                                  capture_output=True, text=True)
            scores.append(_bogo_score(proc.stdout))
            labels.append(it.is_spam)
            subprocess.run(["bogofilter", "-C", "-d", wl, "-s" if it.is_spam else "-n",
                            "-I", str(it.path)], check=True)
        return trec.Result("bogofilter", scores, labels, time.perf_counter() - start)


def bogofilter_two_fold(items: Sequence[trec.Item]) -> trec.Result:
    half = len(items) // 2
    scores, labels = [], []
    start = time.perf_counter()
    for train, test in ((items[:half], items[half:]), (items[half:], items[:half])):
        with tempfile.TemporaryDirectory() as wl:
            for flag, want in (("-s", True), ("-n", False)):
                files = [str(it.path) for it in train if it.is_spam == want]
                subprocess.run(["bogofilter", "-C", "-d", wl, flag, "-B", *files], check=True)
            out = subprocess.run(["bogofilter", "-C", "-d", wl, "-T", "-b"], capture_output=True,
                                 text=True, input="\n".join(str(it.path) for it in test) + "\n")
            by_path = {line.split()[0]: _bogo_score(line) for line in out.stdout.splitlines()}
            for it in test:
                scores.append(by_path.get(str(it.path), 0.5))
                labels.append(it.is_spam)
    return trec.Result("bogofilter 2-fold", scores, labels, time.perf_counter() - start)


# -- SpamAssassin Bayes -------------------------------------------------------

SA_DRIVER = r"""
use strict; use warnings;
use Mail::SpamAssassin;
my ($dir) = @ARGV;
open my $cf, '>', "$dir/local.cf" or die;
print $cf <<"CF";
loadplugin Mail::SpamAssassin::Plugin::Check
loadplugin Mail::SpamAssassin::Plugin::Bayes
util_rb_tld com net org edu gov mil int info biz us uk de fr jp ru cn ca au nl it es br kr tw
util_rb_2tld co.uk co.jp com.au com.cn com.tw co.kr
use_bayes 1
bayes_auto_learn 0
bayes_path $dir/bayes
bayes_min_ham_num 1
bayes_min_spam_num 1
body BAYES_ANY eval:check_bayes('0.00', '1.01')
CF
close $cf;
open my $up, '>', "$dir/user_prefs" or die; close $up;
my $sa = Mail::SpamAssassin->new({ site_rules_filename => $dir, rules_filename => $dir,
    userprefs_filename => "$dir/user_prefs", local_tests_only => 1, dont_copy_prefs => 1,
    home_dir_for_helpers => $dir, userstate_dir => $dir });
$sa->init(1);
$| = 1;
while (my $line = <STDIN>) {
  chomp $line; my ($label, $path) = split /\t/, $line, 2;
  open my $fh, '<', $path or die "$path: $!"; my $text = do { local $/; <$fh> }; close $fh;
  my $msg = $sa->parse($text);
  my $st = $sa->check($msg);
  my $b = $st->get_tag('BAYES'); $b = '0.5' unless defined $b && $b ne '';
  print "$b\n";
  $st->finish;
  $sa->learn($msg, undef, $label eq 'spam' ? 1 : 0, 0);
  $msg->finish;
}
$sa->finish_learner;
"""


def spamassassin_online(items: Sequence[trec.Item]) -> trec.Result:
    with tempfile.TemporaryDirectory() as home:
        script = Path(home) / "driver.pl"
        script.write_text(SA_DRIVER)
        feed = "".join(f"{'spam' if it.is_spam else 'ham'}\t{it.path}\n" for it in items)
        start = time.perf_counter()
        proc = subprocess.run(["perl", str(script), home], input=feed, capture_output=True,
                              text=True, check=True)
        seconds = time.perf_counter() - start
    scores = [float(x) for x in proc.stdout.split()]
    if len(scores) != len(items):
        raise RuntimeError(f"SpamAssassin gave {len(scores)} scores for {len(items)} messages")
    return trec.Result("SpamAssassin Bayes", scores, [it.is_spam for it in items], seconds)


# -- keepmail -----------------------------------------------------------------

def score_latency(items: Sequence[trec.Item], clf: Classifier,
                  n: int = 0) -> tuple[float, float, float]:
    """Mean, median and 95th percentile ms of Classifier.score (with reasons, as the MX
    and `keepmail spam score` call it) on a warm model; messages read beforehand."""
    raws = [it.path.read_bytes() for it in (items[:n] if n else items)]
    times = []
    perf = time.perf_counter
    for raw in raws:
        t = perf()
        clf.score(raw)
        times.append(perf() - t)
    mean = 1e3 * sum(times) / len(times)
    times.sort()
    return mean, 1e3 * times[len(times) // 2], 1e3 * times[int(0.95 * len(times))]


def compare(ours: trec.Result, peer: trec.Result) -> str:
    return (f"  keepmail vs {peer.name}: 1-ROCA ratio {ours.roca / peer.roca:.2f} "
            f"(lower is better), caught {100 * ours.caught:.2f} % vs {100 * peer.caught:.2f} %, "
            f"speed x{ours.rate / peer.rate:.1f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--sa-limit", type=int, default=0, help="SpamAssassin on the first N only")
    ap.add_argument("--no-sa", action="store_true")
    ap.add_argument("--no-2fold", action="store_true")
    ap.add_argument("--no-bogofilter", action="store_true")
    ap.add_argument("--warm", action="store_true",
                    help="also run keepmail from the starter model (optimistic: the starter "
                         "was trained on this corpus; a regression check, not a result)")
    args = ap.parse_args()

    items = trec.seeded_order(trec.load_corpus(corpus_dir()), args.seed)
    n_spam = sum(it.is_spam for it in items)
    print(f"SpamAssassin public corpus: {len(items)} messages ({n_spam} spam, "
          f"{len(items) - n_spam} ham), seeded order seed={args.seed}")
    print("TREC online protocol (classify, then learn the true label). keepmail starts from an "
          "EMPTY model, not the starter model (which was trained on this corpus).")
    clf = Classifier.empty()
    ours = trec.run_online(clf, items)
    print(ours.line())
    if args.warm:
        warm = trec.run_online(Classifier.starter(), items, name="keepmail --warm")
        print(warm.line() + "  [starter model: trained on this corpus]")
    if not args.no_bogofilter:
        bogo = bogofilter_online(items)
        print(bogo.line())
        print(compare(ours, bogo))
    if not args.no_sa:
        subset = items[: args.sa_limit] if args.sa_limit else items
        sa = spamassassin_online(subset)
        print(sa.line() + ("" if len(subset) == len(items) else f"  [first {len(subset)} only]"))
        mine = ours if len(subset) == len(items) else trec.Result(
            f"keepmail first {len(subset)}", ours.scores[: len(subset)],
            ours.labels[: len(subset)], ours.seconds * len(subset) / len(items))
        print(compare(mine, sa))
    mean, median, p95 = score_latency(items, clf)
    print(f"keepmail score() latency after training, {len(items)} messages: mean {mean:.2f} ms, "
          f"median {median:.2f} ms, p95 {p95:.2f} ms per classification")
    if not args.no_2fold:
        print("2-fold cross-validation on the same order (train one half, test the other):")
        ours2 = trec.run_two_fold(Classifier.empty, items)
        print(ours2.line())
        if not args.no_bogofilter:
            bogo2 = bogofilter_two_fold(items)
            print(bogo2.line())
            print(compare(ours2, bogo2))


if __name__ == "__main__":
    main()
