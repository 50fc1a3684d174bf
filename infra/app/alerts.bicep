// Two log search alerts on the app's Application Insights telemetry, sent to
// one action group: a scheduled run failed, and a scheduled run was due but no
// successful run followed (the timer's success: in queue mode, its fan-out). The second alert reads the timer's own schedule,
// because Azure Monitor log alerts look back at most two days
// ("Supported granularities are: 5 ... 2880" minutes): an alert on "no success
// in the last N days" cannot see a weekly run.

param location string
param tags object = {}
param applicationInsightsId string

@description('Where alerts are emailed; empty creates the action group without receivers.')
param alertEmail string = ''

@description('NCRONTAB schedule of the timer (seconds minutes hours day month weekday, UTC).')
param schedule string

@description('Weekdays the schedule fires on, 0 = Sunday, comma-separated: infra/hooks/schedule_weekdays.py computes them from the schedule and refuses one this alert cannot follow.')
@minLength(1)
param scheduleWeekdays string

@description('The schedule\'s first firing of a due day, HH:MM:SS (from the preprovision hook).')
param scheduleFirstRun string

@description('Minutes after a scheduled run is due before its missing success alerts; covers the 30-minute function timeout and telemetry delay.')
@minValue(30)
@maxValue(240)
param missedRunGraceMinutes int = 60

// A failed run's next firings have this long to heal it before anyone is paged.
var healMinutes = 45

// The name of the timer function in function_app.py.
var functionName = 'scheduled_submission'

resource actionGroup 'Microsoft.Insights/actionGroups@2023-01-01' = {
  name: 'ag-numerai-submissions'
  location: 'global'
  tags: tags
  properties: {
    groupShortName: 'numerai'
    enabled: true
    emailReceivers: empty(alertEmail) ? [] : [
      {
        name: 'email'
        emailAddress: alertEmail
        useCommonAlertSchema: true
      }
    ]
  }
}

// Pages only for what did not heal. The default schedule fires every ten minutes while a
// round can be open, so a run that failed is retried by the next firing; a failure is worth
// an email only when (1) a round's staking closed with a model not submitted: the first
// run after the close asks Numerai and logs a record with round_missed (shared/steps/window.py,
// shared/telemetry.py), or (2) a round's last scheduled run failed and none has succeeded
// since, {heal} minutes on. Every run logs its record (record_run, run_status, mode and
// round among the customDimensions of the traces table), in local and queue mode alike;
// a timer that fails before any record leaves no success, which the missed-run alert sees.
// The alert is stateful (autoMitigate): one failure notifies once, not every hour.
var roundMissedQuery = '''
union
    (traces
    | where tostring(customDimensions.round_missed) == "true"),
    (traces
    | where tostring(customDimensions.mode) == "scheduled" and isnotempty(tostring(customDimensions.run_status))
    | extend round = tostring(customDimensions.round), status = tostring(customDimensions.run_status)
    | summarize lastFailed = maxif(timestamp, status == "failed"),
                lastHealthy = maxif(timestamp, status in ("succeeded", "nothing_to_do")) by round
    | where isnotnull(lastFailed) and (isnull(lastHealthy) or lastHealthy < lastFailed)
        and lastFailed < ago({heal}m))
'''

resource roundMissed 'Microsoft.Insights/scheduledQueryRules@2023-12-01' = {
  name: 'alert-round-missed'
  location: location
  tags: tags
  kind: 'LogAlert'
  properties: {
    // Validating the query against an Application Insights component created moments earlier
    // in the same deployment can fail (its tables are not there yet); the tests check the query.
    skipQueryValidation: true
    displayName: 'Numerai model missed the round'
    description: 'A round\'s staking closed with a model not submitted (the first run after the close checked with Numerai), or a round\'s last scheduled run failed and none succeeded in the ${healMinutes} minutes since. The run reports in the results container (reports/, GET /api/runs) say which model and why.'
    severity: 1
    enabled: true
    scopes: [
      applicationInsightsId
    ]
    evaluationFrequency: 'PT15M'
    windowSize: 'PT1H'
    autoMitigate: true
    criteria: {
      allOf: [
        {
          query: replace(roundMissedQuery, '{heal}', string(healMinutes))
          timeAggregation: 'Count'
          operator: 'GreaterThan'
          threshold: 0
          failingPeriods: {
            numberOfEvaluationPeriods: 1
            minFailingPeriodsToAlert: 1
          }
        }
      ]
    }
    actions: {
      actionGroups: [
        actionGroup.id
      ]
    }
  }
}

// Finds the latest time the schedule was first due on a due day and returns a row when
// no successful run started since. The first firing and the weekdays come parsed (names,
// ranges, lists, steps, `*`): the preprovision hook's schedule_weekdays.py checks and
// parses the schedule, since a parser here could not be tested outside Azure. Each due run is judged in the hourly evaluations of the 90 minutes
// after its grace period; muting actions for two hours makes that one email.
// `success` is a bool in some Application Insights schemas and the string "True" in others
// (Microsoft's own examples compare it both ways): compared as text, it matches in either.
var missedRunQuery = '''
let runTime = totimespan("{firstRun}");
let grace = {grace}m;
let runDays = dynamic([{weekdays}]);
let lastDue = toscalar(
    range daysAgo from 0 to 7 step 1
    | extend due = startofday(now()) - daysAgo * 1d + runTime
    | where due <= now() - grace and set_has_element(runDays, tolong(dayofweek(due) / 1d))
    | summarize max(due));
requests
| where timestamp >= lastDue and name contains "{function}" and tostring(success) =~ "true"
| summarize successes = count()
| where successes == 0 and lastDue > now() - grace - 90m
'''

resource runMissed 'Microsoft.Insights/scheduledQueryRules@2023-12-01' = {
  name: 'alert-scheduled-run-missed'
  location: location
  tags: tags
  kind: 'LogAlert'
  properties: {
    // Validating the query against an Application Insights component created moments earlier
    // in the same deployment can fail (its tables are not there yet); the tests check the query.
    skipQueryValidation: true
    displayName: 'Numerai scheduled run missed'
    description: 'No successful ${functionName} run started since the schedule (${schedule}, UTC) was last due. The app may be stopped, failing to start, or every firing failed (see the missed-round alert).'
    severity: 1
    enabled: true
    scopes: [
      applicationInsightsId
    ]
    evaluationFrequency: 'PT1H'
    // Covers the grace period plus the 90-minute judging band.
    windowSize: 'PT6H'
    autoMitigate: false
    muteActionsDuration: 'PT2H'
    criteria: {
      allOf: [
        {
          query: replace(replace(replace(replace(missedRunQuery, '{firstRun}', scheduleFirstRun), '{weekdays}', scheduleWeekdays), '{grace}', string(missedRunGraceMinutes)), '{function}', functionName)
          timeAggregation: 'Count'
          operator: 'GreaterThan'
          threshold: 0
          failingPeriods: {
            numberOfEvaluationPeriods: 1
            minFailingPeriodsToAlert: 1
          }
        }
      ]
    }
    actions: {
      actionGroups: [
        actionGroup.id
      ]
    }
  }
}

output actionGroupId string = actionGroup.id
