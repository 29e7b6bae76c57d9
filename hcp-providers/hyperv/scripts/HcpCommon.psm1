# Functions shared by HCP's Hyper-V scripts. Imported by each script from its own directory.
Set-StrictMode -Version Latest

function Get-HcpMark {
    # Returns HCP's mark from a VM's Notes (a JSON document {"hcp": {...}}), or $null.
    param([Parameter(Mandatory)]$VM)
    if ([string]::IsNullOrWhiteSpace($VM.Notes)) { return $null }
    try {
        $doc = ConvertFrom-Json -InputObject $VM.Notes
    }
    catch {
        return $null
    }
    if ($doc.PSObject.Properties.Name -contains 'hcp') { return $doc.hcp }
    return $null
}

function Find-HcpVm {
    # Finds a VM by its Hyper-V id, else by HCP's vm id in its Notes. On a failover cluster it
    # searches the VM roles of every node, so a VM that moved to another owner node is found there.
    param(
        [Parameter(Mandatory)][string]$VmId,
        [string]$NativeId,
        [bool]$Cluster
    )
    $computers = @($env:COMPUTERNAME)
    if ($Cluster) {
        $computers = @(Get-ClusterGroup | Where-Object { $_.GroupType -eq 'VirtualMachine' } |
                ForEach-Object { $_.OwnerNode.Name } | Sort-Object -Unique)
        if ($computers.Count -eq 0) { $computers = @($env:COMPUTERNAME) }
    }
    foreach ($computer in $computers) {
        if ($NativeId) {
            $vm = Get-VM -ComputerName $computer -Id $NativeId -ErrorAction SilentlyContinue
            if ($vm) { return $vm }
        }
        foreach ($vm in @(Get-VM -ComputerName $computer)) {
            $mark = Get-HcpMark -VM $vm
            if ($mark -and $mark.vm_id -eq $VmId) { return $vm }
        }
    }
    return $null
}

function Get-HcpVmOrThrow {
    param(
        [Parameter(Mandatory)][string]$VmId,
        [string]$NativeId,
        [bool]$Cluster
    )
    $vm = Find-HcpVm -VmId $VmId -NativeId $NativeId -Cluster $Cluster
    if (-not $vm) {
        $what = $NativeId
        if (-not $what) { $what = $VmId }
        $exception = New-Object System.Management.Automation.ItemNotFoundException -ArgumentList "Hyper-V was unable to find a virtual machine with id `"$what`"."
        $record = New-Object System.Management.Automation.ErrorRecord -ArgumentList $exception, 'VmNotFound', ([System.Management.Automation.ErrorCategory]::ObjectNotFound), $what
        throw $record
    }
    return $vm
}

function New-HcpError {
    # Builds a terminating error record with an explicit category, so HCP can classify it.
    param(
        [Parameter(Mandatory)][System.Management.Automation.ErrorCategory]$Category,
        [Parameter(Mandatory)][string]$Message,
        [Parameter(Mandatory)][string]$ErrorId
    )
    $exception = New-Object System.InvalidOperationException -ArgumentList $Message
    return New-Object System.Management.Automation.ErrorRecord -ArgumentList $exception, $ErrorId, $Category, $null
}

function Get-HcpVmView {
    param([Parameter(Mandatory)]$VM)
    $disk = 0
    foreach ($drive in @(Get-VMHardDiskDrive -VM $VM)) {
        if ($drive.Path) { $disk += (Get-VHD -Path $drive.Path -ComputerName $VM.ComputerName).Size }
    }
    [ordered]@{
        Id                   = $VM.Id.ToString()
        Name                 = $VM.Name
        State                = $VM.State.ToString()
        ProcessorCount       = $VM.ProcessorCount
        MemoryStartupMiB     = [int64]($VM.MemoryStartup / 1048576)
        DynamicMemoryEnabled = $VM.DynamicMemoryEnabled
        Generation           = $VM.Generation
        Notes                = $VM.Notes
        OwnerNode            = $VM.ComputerName
        DiskGiB              = [int64]($disk / 1073741824)
        Switches             = @($VM.NetworkAdapters | ForEach-Object { $_.SwitchName })
    }
}

function Get-HcpCheckpointByName {
    # Returns the VM's one checkpoint named $Name, or $null. HCP treats checkpoint names as unique
    # per VM; Hyper-V does not, so a name several checkpoints share is refused, never guessed.
    param(
        [Parameter(Mandatory)]$VM,
        [Parameter(Mandatory)][string]$Name
    )
    $found = @(Get-VMSnapshot -VM $VM -SnapshotType Standard | Where-Object { $_.Name -eq $Name })
    if ($found.Count -gt 1) {
        throw (New-HcpError -Category InvalidOperation -ErrorId 'CheckpointNameNotUnique' -Message "$($found.Count) checkpoints of virtual machine '$($VM.Name)' are named '$Name'; HCP needs checkpoint names to be unique per VM. Rename or remove the others in Hyper-V first.")
    }
    if ($found.Count -eq 1) { return $found[0] }
    return $null
}

function Get-HcpCheckpointView {
    # Describes a checkpoint. Its State is the state it captured: Running, Paused or Saved when it
    # holds the VM's memory, Off when it holds only the disks.
    param([Parameter(Mandatory)]$Checkpoint)
    $state = $Checkpoint.State.ToString()
    [ordered]@{
        Id           = $Checkpoint.Id.ToString()
        Name         = $Checkpoint.Name
        CreationTime = $Checkpoint.CreationTime.ToUniversalTime().ToString('o')
        State        = $state
        Memory       = ($state -ne 'Off')
    }
}

Export-ModuleMember -Function Get-HcpMark, Find-HcpVm, Get-HcpVmOrThrow, New-HcpError, Get-HcpVmView, Get-HcpCheckpointByName, Get-HcpCheckpointView
