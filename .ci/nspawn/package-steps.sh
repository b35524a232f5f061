#!/bin/bash
# Runs INSIDE the package-test container (see .ci/package-test). Prints
# "CHECK <name>: PASS|FAIL <detail>" and "FIGURE <name>: <value>" lines,
# which .ci/package-test gathers.
#   package-steps.sh no-systemd DEB        PID 1 is this script: install, purge
#   package-steps.sh systemd V1.deb V2.deb PID 1 is systemd: the whole life
set -u
check() { # name status detail
  if [ "$2" = 0 ]; then echo "CHECK $1: PASS $3"; else echo "CHECK $1: FAIL $3"; fi
}
figure() { echo "FIGURE $*"; }
sec() { echo; echo "=================== $*"; }
main_pid() { systemctl show -p MainPID --value amexd; }
restarts() { systemctl show -p NRestarts --value amexd; }
running_version() { amexctl status --json 2>/dev/null | grep -o '"version": *"[^"]*"' | head -1 | sed -E 's/.*: *"(.*)"/\1/'; }
conf=/etc/amexd/amexd.yaml

if [ "$1" = no-systemd ]; then
  deb=$2
  sec "dpkg -i $deb with PID 1 = $(cat /proc/1/comm), no systemd"
  out=$(dpkg -i "$deb" 2>&1); rc=$?
  echo "$out"
  [ $rc = 0 ]; check no-systemd-install $? "dpkg -i rc=$rc"
  msg=$(grep 'systemd is not running here' <<<"$out")
  [ -n "$msg" ]; check no-systemd-says-so $? "postinst: ${msg:0:150}"
  ! pgrep -x amexd >/dev/null; check no-systemd-left-off $? "amexd processes: $(pgrep -xc amexd)"
  st=$(stat -c '%a %U:%G' /etc/amexd/jwt.secret 2>&1)
  [ "$st" = "400 amexd:amexd" ]; check no-systemd-secret $? "jwt.secret $st; user: $(getent passwd amexd)"
  out=$(dpkg -P amexd 2>&1); rc=$?
  echo "$out"
  left=""
  for f in /etc/amexd /var/log/amexd /var/lib/amexd /usr/bin/amexd /etc/systemd/system/*/amexd.*; do
    [ -e "$f" ] && left="$left $f"
  done
  [ $rc = 0 ] && [ -z "$left" ]; check no-systemd-purge $? "dpkg -P rc=$rc; left: ${left:-nothing}"
  # The systemd run below starts from a system that never had amexd's user.
  userdel amexd 2>/dev/null; groupdel amexd 2>/dev/null
  exit 0
fi

V1=$2 V2=$3
U=http://127.0.0.1:3000

sec "dpkg -i $V1 (first install)"
out=$(dpkg -i "$V1" 2>&1); rc=$?
echo "$out"
sleep 1
st=$(systemctl is-active amexd)
[ $rc = 0 ] && [ "$st" = active ]; check install-v1 $? "dpkg -i rc=$rc, amexd.service $st, enabled: $(systemctl is-enabled amexd)"
grep -q 'usermod -aG amexd' <<<"$out"; check install-says-group $? "$(grep -o 'to use amexctl.*' <<<"$out" | cut -c1-120)"
code=$(curl -s -o /tmp/users.json -w '%{http_code}' $U/users)
[ "$code" = 200 ]; check curl-v1 $? "GET /users -> $code $(head -c 60 /tmp/users.json)"
echo "user: $(getent passwd amexd); group: $(getent group amexd)"
st=$(stat -c '%a %U:%G' /etc/amexd/jwt.secret 2>&1)
[ "$st" = "400 amexd:amexd" ]; check secret $? "jwt.secret $st"
useradd -m -s /bin/bash alice && usermod -aG amexd alice
runuser -u alice -- amexctl status >/tmp/alice.out 2>&1; r=$?
head -3 /tmp/alice.out
[ $r = 0 ]; check amexctl-group-member $? "alice (group amexd): amexctl status rc=$r: $(head -1 /tmp/alice.out)"

sec "edit the conffile: an upstream outside amexd, a rate limit above the load"
# The embedded simulator lives in the supervisor, whose re-exec cuts the calls
# in flight to it (docs/service.md, "Upgrading the binary"); a real upstream does not.
systemd-run -q --unit=eventapi /root/pkg/eventapi -listen 127.0.0.1:4000 -add-fail 0 -list-error-rate 0 -event-delay 5ms
printf 'upstream:\n  url: http://127.0.0.1:4000   # edited by package-test\n' >>$conf
sed -i -E 's|^  rate: 100-M|  rate: 1000000-M|' $conf
grep -nE 'edited by package-test|rate: ' $conf
systemctl restart amexd; sleep 1
TOKEN=$(amexctl token --secret-file /etc/amexd/jwt.secret --sub package-test)
code=$(curl -s -o /dev/null -w '%{http_code}' -H "Authorization: Bearer $TOKEN" -H 'Content-Type: application/json' -d '{"name":"pkg","userId":1}' $U/events)
[ "$code" = 201 ] && systemctl is-active -q amexd; check post-v1 $? "POST /events with a token -> $code"

sec "dpkg -i $V2 under load (upgrade)"
pid0=$(main_pid); n0=$(restarts); v0=$(running_version); b0=$(/usr/bin/amexd -version)
echo "before: MainPID $pid0, NRestarts $n0, running $v0; $b0"
end=$(( $(date +%s) + 40 ))
post=(-H "Authorization: Bearer $TOKEN" -H 'Content-Type: application/json' -d '{"name":"pkg","userId":2}')
( while [ "$(date +%s)" -lt $end ]; do curl -s -m 10 -o /dev/null -w '%{http_code}\n' $U/users; done >/tmp/get-new.txt ) & A=$!
( while [ "$(date +%s)" -lt $end ]; do curl -s -m 10 -o /dev/null -w '%{http_code}\n' "${post[@]}" $U/events; done >/tmp/post-new.txt ) & B=$!
# shellcheck disable=SC2046 # one -o /dev/null URL pair per request
( curl --rate 80/s -s -m 10 -w '%{http_code} %{num_connects}\n' $(for _ in $(seq 3000); do printf -- '-o /dev/null %s/users ' $U; done) >/tmp/get-ka.txt ) & C=$!
# shellcheck disable=SC2046
( curl --rate 40/s -s -m 10 -w '%{http_code} %{num_connects}\n' "${post[@]}" $(for _ in $(seq 1500); do printf -- '-o /dev/null %s/events ' $U; done) >/tmp/post-ka.txt ) & D=$!
sleep 3
t0=$(date +%s%N)
out=$(dpkg -i "$V2" 2>&1); rc=$?
t1=$(date +%s%N)
echo "$out"
wait $A $B $C $D
pid1=$(main_pid); n1=$(restarts); v1=$(running_version); b1=$(/usr/bin/amexd -version)
echo "after: MainPID $pid1, NRestarts $n1, running $v1; $b1"
[ $rc = 0 ]; check upgrade-dpkg $? "dpkg -i rc=$rc in $(( (t1 - t0) / 1000000 )) ms"
figure "upgrade message: $(grep -o 'upgraded: .*' <<<"$out")"
total=0; failed=0
for f in get-new post-new get-ka post-ka; do
  want=200; [[ $f == post-* ]] && want=201
  n=$(wc -l </tmp/$f.txt); bad=$(awk -v w=$want '$1 != w' /tmp/$f.txt | wc -l)
  conns=$(awk 'NF > 1 {c += $2} END {print c + 0}' /tmp/$f.txt)
  figure "requests $f: $n sent, $((n - bad)) ok, $bad failed$([[ $f == *-ka ]] && echo ", over $conns connections") ($(sort /tmp/$f.txt | awk '{print $1}' | uniq -c | tr -s ' ' | tr '\n' ','))"
  total=$((total + n)); failed=$((failed + bad))
done
[ $failed = 0 ] && [ $total -gt 1000 ]; check upgrade-no-failed-request $? "$total requests during the upgrade, $failed failed"
[ "$pid0" = "$pid1" ] && [ "$pid1" != 0 ]; check upgrade-same-mainpid $? "MainPID $pid0 -> $pid1"
[ "$n0" = 0 ] && [ "$n1" = 0 ]; check upgrade-no-restart $? "NRestarts $n0 -> $n1"
figure "versions: running $v0 -> $v1; /usr/bin/amexd -version: $b0 -> $b1"
[[ $v1 == v1.1.0\ * ]] && [[ $v0 == v1.0.0\ * ]]; check upgrade-version $? "$v0 -> $v1"
ino=$(stat -c %i /usr/bin/amexd); procs=0; stale=""
cg=$(systemctl show -p ControlGroup --value amexd)
for d in /sys/fs/cgroup /sys/fs/cgroup/unified /sys/fs/cgroup/systemd; do # cgroup2, or a hybrid host's
  [ -e "$d$cg/cgroup.procs" ] && { cg=$d$cg; break; }
done
while read -r p; do
  procs=$((procs + 1))
  [ "$(readlink "/proc/$p/exe")" = /usr/bin/amexd ] && [ "$(stat -Lc %i "/proc/$p/exe")" = "$ino" ] || stale="$stale $p:$(readlink "/proc/$p/exe")"
done <"$cg/cgroup.procs"
[ -z "$stale" ] && [ $procs -ge 2 ]; check upgrade-every-process-new $? "$procs processes in amexd.service, all run /usr/bin/amexd inode $ino${stale:+; not:$stale}"
grep -q 'edited by package-test' $conf && grep -q 'rate: 1000000-M' $conf && ! ls /etc/amexd/*.dpkg-* >/dev/null 2>&1
check conffile-kept-on-upgrade $? "$(grep -c 'edited by package-test' $conf) edited line in $conf, no .dpkg-dist/.dpkg-new"
journalctl -u amexd --since "@$((t0 / 1000000000))" -o cat --no-pager | grep -E 'upgrade|re-execut|canary' | grep -v '"msg":"request"' | cut -c1-220 | tail -8

sec "a refused binary upgrade: dpkg -i $V1 (a downgrade) with a configuration the new binary refuses"
echo 'fanout: 0                 # refused, by package-test' >>$conf
pid0=$(main_pid)
out=$(dpkg -i "$V1" 2>&1); rc=$?
echo "$out"
code=$(curl -s -o /dev/null -w '%{http_code}' $U/users)
v=$(running_version)
[ $rc != 0 ] && [ "$(main_pid)" = "$pid0" ] && [[ $v == v1.1.0\ * ]] && [ "$code" = 200 ]
check refused-upgrade-keeps-serving $? "dpkg rc=$rc, still $v (pid $(main_pid)), GET /users $code; reason: $(grep -o 'upgrade refused.*' <<<"$out" | cut -c1-160)"
sed -i '/refused, by package-test/d' $conf
out=$(dpkg --configure -a 2>&1); rc=$?
echo "$out"
v=$(running_version)
[ $rc = 0 ] && [[ $v == v1.0.0\ * ]] && [ "$(main_pid)" = "$pid0" ]; check configure-after-fix $? "dpkg --configure -a rc=$rc, now $v (pid $(main_pid)), $(dpkg-query -W -f='${Version} ${Status}' amexd)"
out=$(dpkg -i "$V2" 2>&1); rc=$?
[ $rc = 0 ] && [[ $(running_version) == v1.1.0\ * ]]; check upgrade-again $? "dpkg -i v2 rc=$rc: $(grep -o 'upgraded: .*' <<<"$out")"

sec "dpkg -r amexd"
out=$(dpkg -r amexd 2>&1); rc=$?
echo "$out"
st=$(systemctl is-active amexd)
[ $rc = 0 ] && [ "$st" = inactive ] && [ ! -e /usr/bin/amexd ]; check remove-stops $? "dpkg -r rc=$rc, amexd.service $st, enabled: $(systemctl is-enabled amexd 2>&1)"
grep -q 'edited by package-test' $conf; check remove-keeps-conffile $? "$conf $(test -e $conf && echo kept, with the edit) $(echo /etc/amexd/*)"
links=""
for f in /etc/systemd/system/*/amexd.*; do [ -e "$f" ] || [ -L "$f" ] && links="$links $f"; done
[ -z "$links" ]; check remove-disables $? "links to the units left: ${links:-none}"

sec "dpkg -i $V2 after the remove: enabled and started again, with the kept configuration"
out=$(dpkg -i "$V2" 2>&1); rc=$?
echo "$out"
sleep 1
code=$(curl -s -o /dev/null -w '%{http_code}' $U/users)
[ $rc = 0 ] && systemctl is-active -q amexd && systemctl is-enabled -q amexd && [ "$code" = 200 ] && grep -q 'edited by package-test' $conf
check reinstall-after-remove $? "dpkg -i rc=$rc, amexd.service $(systemctl is-active amexd) and $(systemctl is-enabled amexd), GET /users $code, $(grep -c 'edited by package-test' $conf) edited line"

sec "dpkg -P amexd"
out=$(dpkg -P amexd 2>&1); rc=$?
echo "$out"
left=""
for f in /etc/amexd /var/log/amexd /var/lib/amexd /run/amexd /usr/bin/amexd /usr/bin/amexctl /usr/lib/systemd/system/amexd.* \
  /usr/lib/sysusers.d/amexd.conf /etc/logrotate.d/amexd /usr/share/doc/amexd /etc/systemd/system/*/amexd.*; do
  [ -e "$f" ] && left="$left $f"
done
known=$(dpkg-query -W -f='${Status}' amexd 2>&1)
[ $rc = 0 ] && [ -z "$left" ] && getent passwd amexd >/dev/null
check purge $? "dpkg -P rc=$rc; left: ${left:-nothing}; dpkg: $known; user kept: $(getent passwd amexd)"

sec "dpkg -i $V2 after the purge"
out=$(dpkg -i "$V2" 2>&1); rc=$?
echo "$out"
sleep 1
code=$(curl -s -o /dev/null -w '%{http_code}' $U/users)
[ $rc = 0 ] && systemctl is-active -q amexd && [ "$code" = 200 ]
check reinstall-serves $? "dpkg -i rc=$rc, amexd.service $(systemctl is-active amexd), GET /users $code, $(running_version)"
systemctl stop amexd eventapi
echo DONE
