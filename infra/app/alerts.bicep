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

@description('Minutes after a scheduled run is due before its missing success alerts; covers the 30-minute function timeout and telemetry delay.')
@minValue(30)
@maxValue(240)
param missedRunGraceMinutes int = 60

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

// Either of two signs of a failed scheduled run. In local mode (MODEL_EXECUTION) the
// timer invocation fails: a failed request. In queue mode the timer succeeds once it has
// fanned out, and the run's outcome is known only when its last model task (or the poison
// or deadline handling) completes the report; the app then logs the run's record
// (shared/telemetry.py, record_run) at ERROR, exported to the traces table with
// run_status and mode among its customDimensions. Local mode logs that record too, so
// both modes alert alike, and a timer that fails before any record still alerts.
// Request telemetry is stamped with the invocation's start and written at its
// end, so a run of up to 30 minutes lands well inside a one-hour window. The
// alert is stateful (autoMitigate): one failure notifies once, not four times.
var runFailedQuery = '''
union
    (requests
    | where name contains "{function}" and success == false),
    (traces
    | where tostring(customDimensions.run_status) == "failed" and tostring(customDimensions.mode) == "scheduled")
'''

resource runFailed 'Microsoft.Insights/scheduledQueryRules@2023-12-01' = {
  name: 'alert-scheduled-run-failed'
  location: location
  tags: tags
  kind: 'LogAlert'
  properties: {
    displayName: 'Numerai scheduled run failed'
    description: 'A scheduled run failed: the timer function ${functionName} failed, or the run\'s record says run_status failed (queue mode, once its last model task is done). A model failed or the job could not run; the run report in the results container (reports/) says why.'
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
          query: replace(runFailedQuery, '{function}', functionName)
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

// Finds the latest time the schedule was due and returns a row when no
// successful run started since. The seconds, minutes and hours are single numbers
// and the weekdays come parsed (names, ranges, lists, steps, `*`): the
// preprovision hook's schedule_weekdays.py checks and parses the schedule, since
// a parser here could not be tested outside Azure. Each due run is judged in the hourly evaluations of the 90 minutes
// after its grace period; muting actions for two hours makes that one email.
var missedRunQuery = '''
let fields = split("{schedule}", " ");
let runTime = tolong(fields[2]) * 1h + tolong(fields[1]) * 1m + tolong(fields[0]) * 1s;
let grace = {grace}m;
let runDays = dynamic([{weekdays}]);
let lastDue = toscalar(
    range daysAgo from 0 to 7 step 1
    | extend due = startofday(now()) - daysAgo * 1d + runTime
    | where due <= now() - grace and set_has_element(runDays, tolong(dayofweek(due) / 1d))
    | summarize max(due));
requests
| where timestamp >= lastDue and name contains "{function}" and success == true
| summarize successes = count()
| where successes == 0 and lastDue > now() - grace - 90m
'''

resource runMissed 'Microsoft.Insights/scheduledQueryRules@2023-12-01' = {
  name: 'alert-scheduled-run-missed'
  location: location
  tags: tags
  kind: 'LogAlert'
  properties: {
    displayName: 'Numerai scheduled run missed'
    description: 'No successful ${functionName} run started since the schedule (${schedule}, UTC) was last due. The app may be stopped, failing to start, or the run failed (see the failed-run alert).'
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
          query: replace(replace(replace(replace(missedRunQuery, '{schedule}', schedule), '{weekdays}', scheduleWeekdays), '{grace}', string(missedRunGraceMinutes)), '{function}', functionName)
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
