# HCP script wrapper: the only text HCP ever sends as -EncodedCommand.
#
# It reads one base64-encoded JSON parameter document from stdin, binds it to the script's typed
# and validated param block by splatting, runs the script, and writes exactly one JSON document to
# stdout: {"ok": true, "result": ...} or {"ok": false, "error": {Category, Message, Cmdlet,
# FullyQualifiedErrorId}}. Progress lines go to stderr as "##hcp-progress {json}", log lines
# (Write-HcpLog, for hooks) as "##hcp-log {json}".
# User data never becomes script text: it only ever arrives as the parameter document.
$ErrorActionPreference = 'Stop'
$ProgressPreference = 'SilentlyContinue'
Set-StrictMode -Version Latest
[Console]::OutputEncoding = New-Object System.Text.UTF8Encoding -ArgumentList $false
$HcpScript = '{{SCRIPT}}'

function Write-HcpProgress {
    param(
        [Parameter(Mandatory)][ValidateRange(0, 100)][int]$Percent,
        [Parameter(Mandatory)][string]$Message
    )
    $line = ConvertTo-Json -InputObject ([ordered]@{ percent = $Percent; message = $Message }) -Compress
    [Console]::Error.WriteLine('##hcp-progress ' + $line)
}

function Write-HcpLog {
    param(
        [Parameter(Mandatory)][string]$Message,
        [ValidateSet('info', 'warn')][string]$Level = 'info'
    )
    $line = ConvertTo-Json -InputObject ([ordered]@{ level = $Level; message = $Message }) -Compress
    [Console]::Error.WriteLine('##hcp-log ' + $line)
}

function ConvertTo-HcpHashtable {
    param($InputObject)
    if ($null -eq $InputObject) { return $null }
    if ($InputObject -is [System.Management.Automation.PSCustomObject]) {
        $table = @{}
        foreach ($property in $InputObject.PSObject.Properties) {
            $table[$property.Name] = ConvertTo-HcpHashtable -InputObject $property.Value
        }
        return $table
    }
    if ($InputObject -is [System.Array]) {
        return , @($InputObject | ForEach-Object { ConvertTo-HcpHashtable -InputObject $_ })
    }
    return $InputObject
}

try {
    $encoded = [Console]::In.ReadToEnd().Trim()
    $json = [System.Text.Encoding]::UTF8.GetString([System.Convert]::FromBase64String($encoded))
    $parameters = ConvertTo-HcpHashtable -InputObject (ConvertFrom-Json -InputObject $json)
    $result = & $HcpScript @parameters
    $document = [ordered]@{ ok = $true; result = $result }
    [Console]::Out.Write((ConvertTo-Json -InputObject $document -Depth 12 -Compress))
    exit 0
}
catch {
    $cmdlet = ''
    if ($_.InvocationInfo -and $_.InvocationInfo.MyCommand) { $cmdlet = $_.InvocationInfo.MyCommand.Name }
    $record = [ordered]@{
        ok    = $false
        error = [ordered]@{
            Category              = $_.CategoryInfo.Category.ToString()
            Message               = $_.Exception.Message
            Cmdlet                = $cmdlet
            FullyQualifiedErrorId = $_.FullyQualifiedErrorId
        }
    }
    [Console]::Out.Write((ConvertTo-Json -InputObject $record -Depth 4 -Compress))
    exit 1
}
